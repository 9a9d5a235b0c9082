"""The HTTP routes, one module per audience: agents (``agent``), automation (``read_api``), the dashboard
(``dashboard``) and administration (``admin``: the admin page, its forms and the admin JSON API).
``POST /api/v1/checkin`` is not here: ``asgi.py`` serves it without the framework."""
