"""The test suite. Its one side effect, first because it must precede every import of grpc:

grpc's fork support off (grpcio 1.85 has it on by default). With it on, every fork of this process
(crgpu runs in-process under CliRunner and starts runc with a preexec_fn) restarts grpc's poller in
the child, which aborts when close_fds closes its epoll fd before exec (grpc/grpc#43055: "epoll_wait
error: Bad file descriptor", runc "exit -6"): 3 forks in 300 with a channel open, 0 with it off.
The tests never fork while a call is in flight. (conftest.py loads the CRI client, and grpc with it.)
"""

import os
import sys

if "grpc" in sys.modules:
    raise ImportError("grpc was loaded before the tests could turn its fork support off")
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
