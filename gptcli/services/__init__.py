"""Model work without I/O: services take loaded models and typed params, and yield typed results."""
