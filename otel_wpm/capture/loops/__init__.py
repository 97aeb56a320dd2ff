"""Where a request an asyncio task serves is, read from outside its event loop.

Runs on the **sampler thread** (:mod:`otel_wpm.capture.sampler` calls
:class:`~.sampler.LoopSampler` each tick). Every request of a loop shares its
thread, so a thread's stack does not say which request runs: :mod:`.tasks`
locates a task (running on the loop, awaiting along its coroutine chain, or
ready and waiting for the loop), :mod:`.workers` follows it into a thread-pool
job it awaits, :mod:`.bridges` follows a thread that waits for a task (asgiref's
``async_to_sync``), and :mod:`.waits` charges whoever held the loop while a
request waited for it.

Hands to :mod:`otel_wpm.reporting`: :class:`~.waits.HeldLoop`, who held a slow
request's loop, through the request's ``loop_waits``.
"""
