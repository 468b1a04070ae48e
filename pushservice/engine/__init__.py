"""The engine of one worker: how a message travels from Redis to the sockets.

- topics: topic names and the routing rule (who a message reaches)
- position: event ids, and where each client stands in the stream
- sse: Server-Sent Events frames (no I/O)
- subscription: one connection's routing state and its bounded mailbox
- hub: this worker's connections by topic; routing, heartbeats, closing
- reader: the one greenlet that reads the Redis Stream and feeds the hub
- event_stream: one client's text/event-stream response (greeting, replay, live, end)
- hangup: noticing at once that a client hung up
- publishing: concurrent publishes of the worker share Redis round trips
- stats: this worker's counters

Nothing here imports Flask; nothing but the store talks to Redis.
"""
