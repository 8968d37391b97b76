"""Scale-out past one process: feed nodes publish every wanted market's normalized book and
trades to NATS JetStream (``wire``), edge nodes serve clients from mirrored books, and each
venue's rate-limit budget is shared cluster-wide. See ``wire`` for the subjects, messages and
the integrity rule."""

__all__: list[str] = []
