"""A driver refused by a token-mode Ray cluster is told why and how to fix it, in milliseconds (issue 18).

The GCS stand-in answers ``GetClusterId`` as Ray 2.60's GCS was measured to (tests/test_cluster.py
runs the real one): ``UNAUTHENTICATED`` without the cluster's bearer token, the cluster id with it.
"""

from __future__ import annotations

import socket
import time
from concurrent import futures

import grpc
import pytest
from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
from ray.exceptions import AuthenticationError

from ray_jobs.connect import RayAuthError, check_token_mode, is_auth_failure

TOKEN = "s3cret"


class TokenGcs(gcs_service_pb2_grpc.NodeInfoGcsServiceServicer):
    def GetClusterId(self, request, context):  # noqa: N802 - gRPC's method name
        if ("authorization", f"Bearer {TOKEN}") not in context.invocation_metadata():
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "InvalidAuthToken: Authentication token is missing")
        return gcs_service_pb2.GetClusterIdReply(cluster_id=b"c" * 28)


@pytest.fixture
def gcs():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    gcs_service_pb2_grpc.add_NodeInfoGcsServiceServicer_to_server(TokenGcs(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture(autouse=True)
def no_ray_settings(monkeypatch, tmp_path):
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token


def test_a_driver_without_token_mode_is_refused_with_the_fix(gcs):
    start = time.monotonic()
    with pytest.raises(RayAuthError) as refused:
        check_token_mode(gcs)
    assert time.monotonic() - start < 2
    message = str(refused.value)
    assert message.startswith(f"the Ray cluster at {gcs} requires token authentication")
    assert "RAY_AUTH_MODE is not set" in message and "export RAY_AUTH_MODE=token" in message
    assert "RAY_AUTH_TOKEN_PATH=FILE" in message and refused.value.exit_code == 2


def test_the_address_may_come_from_ray_address_and_mode_disabled_is_named(gcs, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", gcs)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(RayAuthError, match="RAY_AUTH_MODE is 'disabled'"):
        check_token_mode(None)


def test_token_mode_or_a_token_ray_init_would_find_is_not_probed(gcs, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    check_token_mode(gcs)  # Ray sends the token itself
    monkeypatch.delenv("RAY_AUTH_MODE")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text(TOKEN)
    monkeypatch.setenv("RAY_ADDRESS", gcs)
    check_token_mode(None)  # ray.init() without an address argument turns token mode on when it finds one
    with pytest.raises(RayAuthError):  # an explicit address never does
        check_token_mode(gcs)


def test_nothing_listening_or_a_local_ray_is_left_to_ray_init():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    for address in (closed, None, "auto", "ray://127.0.0.1:10001"):
        check_token_mode(address)


def test_ray_inits_connection_error_is_recognised_by_its_cause():
    try:
        try:
            raise AuthenticationError("RPC error: InvalidAuthToken")
        except AuthenticationError as exc:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from exc
    except ConnectionError as exc:
        assert is_auth_failure(exc)
    assert not is_auth_failure(ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379"))
