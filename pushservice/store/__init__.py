"""Everything that talks to Redis. Nothing outside this package imports redis-py.

- client: clients, key names and error translation (redis-py errors -> 503)
- streams: the message stream (publish, read, replay)
- registry: live connections, worker snapshots, instances and shared counters
- control: the Pub/Sub channel that carries commands between workers and instances
"""

from .client import Keys, RedisConnections, translate_errors
from .control import ControlStore
from .registry import RegistryStore
from .streams import Entry, Published, Store, StreamInfo, new_epoch

__all__ = ["ControlStore", "Entry", "Keys", "Published", "RedisConnections", "RegistryStore",
           "Store", "StreamInfo",
           "new_epoch", "translate_errors"]
