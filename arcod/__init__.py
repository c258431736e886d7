"""arcod: an orchestration daemon for exact selections, repeat-safe reruns and chunked backfills."""

__version__ = "0.1.0"
