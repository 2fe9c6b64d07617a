"""What runs a loaded model: requests in, events out.

``api`` holds the request and event types and the ``Engine`` interface the services use;
``scheduler`` admits requests into a running batch as rows free up (continuous batching);
``slots`` is the KV cache that lets a row join or leave that batch; ``transformers_engine``
is the first backend (today's transformers models); ``worker`` drives an engine from a
thread so a server can feed it.
"""
