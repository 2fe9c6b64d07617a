"""`gptcli serve`: an OpenAI-compatible HTTP server over the same engine and services.

``app`` builds the FastAPI application; ``schemas`` holds the request bodies and their
checks; ``prompts`` turns messages and prompt text into token ids; ``host`` bridges the
engine's worker thread and the event loop; ``completions`` and ``streaming`` shape the
responses; ``embeddings`` serves /v1/embeddings; ``limits`` guards the door (API key, body
size); ``errors`` gives every failure OpenAI's error shape; ``runner`` binds the socket and
runs uvicorn with the house's signal contract.

Nothing here is imported until the command runs: fastapi and torch stay off `gptcli --help`.
"""
