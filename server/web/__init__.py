"""The web face: pages and static files, and the Socket.IO handlers (validate, queue, delegate)."""
