"""Topics: what users asked for, clustered, named and rated by DSAT (`dsatkit topics DIR`).

`build_topics(DIR, TopicsConfig(...))` writes `DIR/topics.duckdb` (tables topics, topic_groups,
exchange_topics, topic_runs); see dsatkit.topics.build.
"""

from dsatkit.topics.build import TOPICS_DB, TopicsResult, TopicsSummary, build_topics
from dsatkit.topics.config import TopicsConfig

__all__ = ["TOPICS_DB", "TopicsConfig", "TopicsResult", "TopicsSummary", "build_topics"]
