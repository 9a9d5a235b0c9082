"""/proc/net/tcp under --root is a copy anyone could have written: only the kernel's exact shape counts."""

from __future__ import annotations

from exposure_guard.qts.listeners import parse_proc_net_tcp

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue\n"


def test_kernel_lines_are_read() -> None:
    text = HEADER + "0: 00000000:1F90 00000000:0000 0A\n1: 0100007F:0016 00000000:0000 0A\n"
    assert [(x.address, x.port) for x in parse_proc_net_tcp(text, "tcp")] == [("0.0.0.0", 8080), ("127.0.0.1", 22)]


def test_fields_not_in_the_kernels_shape_are_skipped() -> None:
    # Found by the /proc fuzz test: port 0x10000 became port 65536; int(..., 16) also takes "0x", "_" and spaces.
    lines = ["0: 0:10000 0100007F:1F90 0A", "1: 00000000:10000 x 0A", "2: 0x000000:1F90 x 0A", "3: 0000_000:1F90 x 0A",
             "4: 00000000:1_F9 x 0A", "5: 00000000:+1F9 x 0A", "6: 00000000: 1F9 x 0A"]
    assert parse_proc_net_tcp(HEADER + "\n".join(lines), "tcp") == []
    assert parse_proc_net_tcp(HEADER + "0: 0000000000000000000000000000000:0016 x 0A", "tcp6") == []
