"""Before a driver connects to a Ray cluster: does the cluster want a token this driver would not send?

Ray 2.60 clusters run with token authentication (``RAY_AUTH_MODE=token``), but a driver given an
address turns it on only when its own environment says so. Without it, ``ray.init(address=...)``
retries for ~20 s and ends in ``ConnectionError: Failed to connect to Ray cluster``, which names
neither the cause nor the fix. One gRPC call to the cluster's GCS without a token answers in
milliseconds: ``UNAUTHENTICATED`` means the cluster wants one (measured against a token-mode head:
17 ms; the same call with the token is answered).
"""

from __future__ import annotations

import os
from pathlib import Path

from mvplatform.errors import MvpError

PROBE_SECONDS = 5.0


class RayAuthError(MvpError):
    """The Ray cluster requires token authentication and this driver would connect without a token."""


def token_help(address: str) -> str:
    """The message for a driver refused by a token-mode cluster: what is wrong and how to fix it."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() == "token":
        return (f"the Ray cluster at {address} refused this driver's token (RAY_AUTH_MODE=token): the token in "
                "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (the first one set) is not the cluster's; "
                "nothing was started. Fix: point RAY_AUTH_TOKEN_PATH at the file the cluster was started with")
    now = f"RAY_AUTH_MODE is {mode!r}" if mode else "RAY_AUTH_MODE is not set"
    return (f"the Ray cluster at {address} requires token authentication, and this driver would connect without "
            f"a token ({now}; a driver given an address does not turn it on by itself); nothing was started. "
            "Fix: export RAY_AUTH_MODE=token and the cluster's token, as RAY_AUTH_TOKEN_PATH=FILE (the file the "
            "cluster was started with), RAY_AUTH_TOKEN=VALUE or ~/.ray/auth_token; see docs/cluster.md, "
            "'Token authentication'")


def check_token_mode(address: str | None) -> None:
    """Raises :class:`RayAuthError` when the cluster ``ray.init(address)`` would reach wants a token this
    driver would not send; returns quietly when it cannot tell (Ray's own connect then reports)."""
    target = address or os.environ.get("RAY_ADDRESS")
    if not target or target == "auto" or "://" in target:  # a local Ray, or Ray Client (ray://)
        return
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() == "token":
        return
    if mode is None and address in (None, "auto") and _token_available():
        return  # ray.init without an address argument (RAY_ADDRESS) turns token mode on when it finds a token
    if _gcs_wants_token(target):
        raise RayAuthError(token_help(target))


def _token_available() -> bool:
    """Whether Ray would find a token: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).expanduser().is_file() if path else (Path.home() / ".ray" / "auth_token").is_file()


def _gcs_wants_token(target: str) -> bool:
    """One GCS call without a token (``GetClusterId``, what a connecting driver asks first)."""
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # another Ray layout: no probe
        return False
    with grpc.insecure_channel(target) as channel:
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=PROBE_SECONDS)  # type: ignore[attr-defined]
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


def is_auth_failure(exc: BaseException) -> bool:
    """Whether ``ray.init``'s ConnectionError was caused by the cluster refusing this driver's token."""
    from ray.exceptions import AuthenticationError

    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return any(isinstance(e, AuthenticationError) for e in chain)
