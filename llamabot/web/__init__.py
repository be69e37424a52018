"""The admin page: personas, bindings, conversations, plugins, logs and the audit log in
the browser, safe to expose (see ``security.py``).

Another front door, not another core: ``server.py`` holds HTTP, sessions and templates,
and calls the services the admin commands use.
"""
