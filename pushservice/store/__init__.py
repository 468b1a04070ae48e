"""Everything that talks to Redis. Nothing outside this package sends Redis a command.

- client: clients, key names and error translation (redis-py errors -> 503)
- messages: the message stream (publish, read, replay, what resuming needs to know)
- connections: the records of live connections, and each user's count of streams
- deployment: worker snapshots, instances, shared counters, leadership leases
- control: the Pub/Sub channel that carries commands between workers and instances
- rates: publish rate limits
"""

from .client import Keys, RedisConnections, translate_errors
from .connections import ConnectionRecords
from .control import ControlStore
from .deployment import DeploymentRecords
from .messages import AckEntry, Entry, MessageStore, Published, StreamInfo, new_epoch

__all__ = ["AckEntry", "ConnectionRecords", "ControlStore", "DeploymentRecords", "Entry", "Keys",
           "MessageStore", "Published", "RedisConnections", "StreamInfo", "new_epoch",
           "translate_errors"]
