"""On-device telemetry: what the active model did after it went live.

The seams (one owner each):

- :mod:`edge_runtime.telemetry.aggregate` (this contract): the per-minute record every other part reads.
- ``edge_runtime.telemetry.store``: the embedded, crash-safe, bounded store (SQLite WAL) that writes and reads
  :class:`~edge_runtime.telemetry.aggregate.MinuteAggregate` rows and bounded feature samples.
- ``edge_runtime.serve``: the inference API applications use (hot swap, one record per inference).
- ``edge_runtime.drift``: drift statistics (KS, PSI), pure functions, no I/O.
- ``edge_runtime.monitor``: the rules over stored aggregates (confidence, error rate, data drift) and the
  self-rollback; findings go into the device facts.
"""
