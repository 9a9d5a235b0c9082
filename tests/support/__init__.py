"""Helpers shared by the tests and the benches: ``from tests.support.<module> import ...``.

The repository root is on ``sys.path`` under pytest (``pythonpath = ["."]`` in pyproject.toml) and for
``python -m bench.<name>`` / ``python -m tests.lab.advisory`` run from the repository root; nothing here
edits ``sys.path``. Modules:

* ``paths``: the repository, src/, tools/ and the fixture folders;
* ``wait``: ``wait_for`` (poll a condition against a generous deadline, never sleep-then-assert);
* ``seeds``: seeded randomness whose seed is printed and can be replayed (``EG_TEST_SEED``);
* ``net``: free ports, self-signed certificates, toy HTTP and TCP servers on loopback;
* ``qts``: fake QTS trees (uLinux.conf and friends), byte-for-byte tree snapshots;
* ``fakeigd``: a loopback UPnP IGD stand-in (real miniupnpd answers) and hostile devices;
* ``reach``: a NAS's services on loopback and a stand-in callback prober;
* ``netlab`` / ``reachlab``: the network-namespace lab with a real miniupnpd router (root), and the real
  prober in it;
* ``qpkg_build`` / ``qts_rig``: building the .qpkg, and the simulated QTS it installs into (root).

Everything that listens binds loopback, or addresses inside namespaces the tests create themselves.
"""
