"""The application layer: what a person or a client starts — the ``leadflow`` command line,
the web app, template previews and the demo (with its sample leads and simulated world).

It sits above the engine: it may start flows (``flows/``) and call the engine, and nothing in
the engine or in ``flows/`` imports it (``make lint`` checks both).
"""
