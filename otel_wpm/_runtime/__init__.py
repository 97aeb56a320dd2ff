"""Plumbing shared by every thread: background workers, fork safety, log-once, stats.

Code here runs on whichever thread calls it; each part is thread-safe and is
renewed in a forked child (:mod:`.forksafe`).
"""
