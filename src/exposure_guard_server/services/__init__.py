"""What the server does, without HTTP: check-ins (``ingest``), enrollment (``enroll``), the stale sweep
(``stale``), transitions and their webhook outbox (``transitions``), fleet reads (``fleet``), metrics
(``metrics``), process counters (``counters``) and administration (``admin``). Routes, the CLI and the
background thread call these; they raise ``errors.ApiError`` for what a caller did wrong."""
