"""Write `example-logs.jsonl`: small OpenAI-messages chat logs with clear DSAT turns, for the "try it".

Each conversation: a question, a wrong answer, the user's complaint (DSAT), a corrected answer and,
for every other conversation, the user's thanks (so that revision is a natural DSAT->SAT seed pair).

    python recipes/data/make_example_logs.py [OUT.jsonl] [N]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TOPICS = [
    ("What is the capital of Australia?", "The capital of Australia is Sydney.", "The capital of Australia is Canberra."),
    ("How many legs does a spider have?", "A spider has six legs.", "A spider has eight legs."),
    ("What is 12 times 12?", "12 times 12 is 124.", "12 times 12 is 144."),
    ("Who wrote Hamlet?", "Hamlet was written by Charles Dickens.", "Hamlet was written by William Shakespeare."),
    ("Translate 'thank you' into French.", "Thank you in French is 'gracias'.", "In French, 'thank you' is 'merci'."),
    ("Write a Python function that reverses a string.", "def rev(s):\n    return s", "def rev(s):\n    return s[::-1]"),
    ("At what temperature does water boil at sea level, in Celsius?", "Water boils at 90 degrees.", "Water boils at 100 degrees Celsius at sea level."),
    ("Name the largest planet in the solar system.", "The largest planet is Mars.", "The largest planet is Jupiter."),
]
COMPLAINTS = [
    "That's wrong, please fix it.",
    "No, that is not what I asked.",
    "That's incorrect. Try again.",
    "This is wrong, you misunderstood my question.",
]


def conversations(n: int = 48) -> list[dict]:
    out = []
    for i in range(n):
        q, bad, good = TOPICS[i % len(TOPICS)]
        messages = [
            {"role": "user", "content": f"{q} (question {i})"},
            {"role": "assistant", "content": bad},
            {"role": "user", "content": COMPLAINTS[(i // len(TOPICS)) % len(COMPLAINTS)]},
            {"role": "assistant", "content": good},
        ]
        if i % 2 == 0:
            messages.append({"role": "user", "content": "Thanks, that works perfectly!"})
        out.append({"id": f"conv-{i:04d}", "messages": messages})
    return out


def write(path: str | Path, n: int = 48) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(c) + "\n" for c in conversations(n)))
    return path


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("example-logs.jsonl"),
          int(sys.argv[2]) if len(sys.argv) > 2 else 48)
