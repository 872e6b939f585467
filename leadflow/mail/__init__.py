"""The email layer: render templates, build MIME messages, send them over SMTP.

The outbox (database) decides *what* to send and records outcomes; this package only turns a
template plus a context into a message and a message into a ``SendResult``.

Nothing is imported here: each concept is imported from its own module (``rendering``,
``message``, ``transport``, ``sink``...), so a process that only renders and builds messages
never loads the SMTP client or the test server.
"""
