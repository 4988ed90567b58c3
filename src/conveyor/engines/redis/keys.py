"""Where the Redis engine keeps things: every key and channel name, in one place.

With the prefix `P` (`?prefix=` in the URL, `conveyor` by default):

    P:queues                      set   the registered queue names
    P:taskq                       hash  task id -> its queue (how a task id finds its keys)
    P:batchq                      hash  batch id -> its queue (a batch's tasks share one queue)
    P:{q:NAME}:meta               hash  config (JSON), paused, ret (retention_s), seq (last seq)
    P:{q:NAME}:t:ID               hash  one task (field names in codec.py)
    P:{q:NAME}:e:ID               list  its events, oldest first (event id = position + 1)
    P:{q:NAME}:n                  hash  "LEVEL:STATUS" -> count
    P:{q:NAME}:s:STATUS           zset  id by seq: every task in STATUS but queued (listings)
    P:{q:NAME}:r:LEVEL            zset  id by seq: the ready lane of a level (queued tasks;
                                        they are listed through these)
    P:{q:NAME}:rg:LEVEL:GROUP     zset  id by seq: the lane's queued tasks of one group (fair)
    P:{q:NAME}:g:LEVEL            zset  the lane's groups with queued tasks (all score 0, by name)
    P:{q:NAME}:sched              zset  id by run_at: scheduled tasks
    P:{q:NAME}:lease              zset  id by lease_expires_at: running tasks
    P:{q:NAME}:dead               zset  id by expires_at: unfinished tasks with a deadline
    P:{q:NAME}:fin                zset  id by completed_at: finished tasks (retention)
    P:{q:NAME}:cb                 zset  id by due time: callbacks owed (the outbox)
    P:{q:NAME}:b:BATCH            zset  id by seq: the batch's tasks (its input order)
    P:{q:NAME}:ba:BATCH           zset  id by seq: the batch's unfinished tasks (cancel)
    P:{q:NAME}:bn:BATCH           hash  "STATUS:RESULT_CODE" -> count of the batch's tasks
    P:{r:KIND}:rec:ID             hash  a record (file, batch): project, created_at, body, ...
    P:{r:KIND}:p:PROJECT          zset  the project's record ids (score 0, by id)
    P:{r:KIND}:active             zset  active record ids (score 0, by id)

Every key of one queue carries the hash tag `{q:NAME}` and every key of one record kind
`{r:KIND}`, so on Redis Cluster each lands in one slot and each script (which touches the
keys of one tag only) runs on one node. The three global keys are only ever read or
written by single commands or by a script that touches that key alone.

Pub/sub channels (not keys): `P:w:NAME` (work arrived in a queue), `P:t:ID` (a task
ended or has new events), `P:cb` (a callback is owed).
"""

from __future__ import annotations

DEFAULT_PREFIX = "conveyor"


class Keys:
    """Key and channel names under one prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self.queues = f"{prefix}:queues"
        self.index = f"{prefix}:taskq"
        self.batches = f"{prefix}:batchq"
        self.callbacks_channel = f"{prefix}:cb".encode()

    def queue(self, name: str) -> str:
        """The base of every key of queue `name` (scripts get it as KEYS[1])."""
        return f"{self.prefix}:{{q:{name}}}:"

    def records(self, kind: str) -> str:
        """The base of every key of records of `kind`."""
        return f"{self.prefix}:{{r:{kind}}}:"

    def work_channel(self, queue: str) -> bytes:
        return f"{self.prefix}:w:{queue}".encode()

    def task_channel(self, task_id: str) -> bytes:
        return f"{self.prefix}:t:{task_id}".encode()


def hash_tag(key: str) -> str:
    """The part of `key` Redis Cluster hashes: the first non-empty `{...}`, else all of it."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key
