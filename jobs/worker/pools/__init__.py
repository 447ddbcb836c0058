"""Execution pools, one module each: where jobs run. ``prefork`` (child processes), ``threads``, ``solo``,
``asyncio`` (async jobs on one event loop), ``gevent`` (greenlets).

A pool takes deliveries with :meth:`submit` and reports each :class:`Outcome` on its
``completions`` queue, which the worker's main thread reads to acknowledge messages (kombu
channels belong to that one thread). Deliveries beyond the pool's size wait in the pool's
backlog and start the moment a slot frees, without waiting for the main thread.
"""

from jobs.worker.pools.asyncio import AsyncioPool
from jobs.worker.pools.base import Completion, Pool
from jobs.worker.pools.gevent import GeventPool
from jobs.worker.pools.prefork import PreforkPool
from jobs.worker.pools.solo import SoloPool
from jobs.worker.pools.threads import ThreadPool

POOLS = {"prefork": PreforkPool, "threads": ThreadPool, "solo": SoloPool, "asyncio": AsyncioPool,
         "gevent": GeventPool}

__all__ = ["POOLS", "AsyncioPool", "Completion", "GeventPool", "Pool", "PreforkPool", "SoloPool",
           "ThreadPool"]
