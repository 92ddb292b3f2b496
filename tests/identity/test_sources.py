"""Certificate sources: start checks, rotation, bad files, renewal, lifecycle."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from inmesh.errors import CertificateError, IdentityError
from inmesh.identity.ca import LocalCA
from inmesh.identity.certificate import WorkloadCertificate
from inmesh.identity.sources import (
    CASource,
    CertificateSource,
    DirectorySource,
    MemorySource,
    WallClock,
)
from inmesh.identity.spiffe import SpiffeId

from . import BACKEND, FRONTEND, FakeClock

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return LocalCA.create(intermediate=True)


def _identity_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("inmesh-identity")}


@pytest.fixture(autouse=True)
def no_thread_leak() -> object:
    before = _identity_threads()
    yield
    assert _identity_threads() - before == set(), "a source thread outlived its test"


def wait_for(predicate: object, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_protocol() -> None:
    assert issubclass(DirectorySource, CertificateSource)
    assert isinstance(CASource(LocalCA.create(), FRONTEND), CertificateSource)


# -- DirectorySource ------------------------------------------------------------


def test_directory_start_and_current(tmp_path: Path, ca: LocalCA) -> None:
    cert = ca.issue(FRONTEND)
    cert.write(tmp_path)
    source = DirectorySource(tmp_path, trust_domain="cluster.local")
    with pytest.raises(IdentityError, match="not started"):
        source.current()
    with source:
        got = source.current()
        assert got.version == 1
        assert got.fingerprint == cert.fingerprint
        assert got.spiffe_id == SpiffeId.parse(FRONTEND)
        assert got.not_before == cert.not_before and got.not_after == cert.not_after
        assert got.cert_chain_pem == cert.cert_chain_pem
        assert got.key_pem == cert.key_pem and got.trust_bundle_pem == cert.trust_bundle_pem
        assert source.counters.loads == 1 and source.counters.errors == 0
        assert source.started
    assert not source.started


def test_directory_picks_up_rotation_within_a_second(tmp_path: Path, ca: LocalCA) -> None:
    ca.issue(FRONTEND).write(tmp_path)
    seen: list[WorkloadCertificate] = []
    arrived = threading.Event()

    def on_rotation(cert: WorkloadCertificate) -> None:
        seen.append(cert)
        arrived.set()

    with DirectorySource(tmp_path) as source:  # default 0.5 s poll
        source.subscribe(on_rotation)
        new = ca.issue(FRONTEND)
        written = time.monotonic()
        new.write(tmp_path)
        assert arrived.wait(1.5), "rotation not seen"
        took = time.monotonic() - written
        assert took < 1.2, took
        assert source.current().fingerprint == new.fingerprint
        assert source.current().version == 2
        assert [c.version for c in seen] == [2]
        assert source.counters.rotations == 1


def test_directory_refresh_without_thread(tmp_path: Path, ca: LocalCA) -> None:
    ca.issue(FRONTEND).write(tmp_path)
    with DirectorySource(tmp_path, poll_interval=0) as source:
        assert not _identity_threads()
        assert not source.refresh()  # nothing changed
        os.utime(tmp_path / "cert-chain.pem")  # touched, same content
        assert not source.refresh()
        assert source.current().version == 1
        new = ca.issue(FRONTEND)
        new.write(tmp_path)
        assert source.refresh()
        assert source.current().fingerprint == new.fingerprint


def test_directory_ignores_corrupt_files_and_keeps_last_good(
    tmp_path: Path, ca: LocalCA, caplog: pytest.LogCaptureFixture
) -> None:
    good = ca.issue(FRONTEND)
    good.write(tmp_path)
    with DirectorySource(tmp_path, poll_interval=0, settle=0) as source:
        caplog.set_level(logging.WARNING, logger="inmesh.identity")
        # garbage
        (tmp_path / "cert-chain.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n")
        assert not source.refresh()
        assert source.current().fingerprint == good.fingerprint
        assert source.counters.errors == 1
        assert "keeping the certificate in use (version 1)" in caplog.text
        assert not source.refresh()  # the same bad files are not re-read
        assert source.counters.errors == 1

        # half-written (truncated) chain of a new certificate
        new = ca.issue(FRONTEND)
        new.write(tmp_path)
        source.refresh()
        assert source.current().fingerprint == new.fingerprint
        half = new.cert_chain_pem[: len(new.cert_chain_pem) // 2]
        (tmp_path / "cert-chain.pem").write_bytes(half)
        assert not source.refresh()
        assert source.current().fingerprint == new.fingerprint
        assert source.counters.errors == 2

        # a key that does not match (the chain was rotated, the key not yet)
        newer = ca.issue(FRONTEND)
        (tmp_path / "cert-chain.pem").write_bytes(newer.cert_chain_pem)
        assert not source.refresh()
        assert source.counters.errors == 3
        assert "private key does not match" in caplog.text
        # ...then the key arrives
        (tmp_path / "key.pem").write_bytes(newer.key_pem)
        assert source.refresh()
        assert source.current().fingerprint == newer.fingerprint
        assert source.current().version == 3

        # a file removed
        (tmp_path / "key.pem").unlink()
        assert not source.refresh()
        assert source.counters.errors == 4
        assert source.current().fingerprint == newer.fingerprint


def test_directory_poller_survives_bad_files(tmp_path: Path, ca: LocalCA) -> None:
    ca.issue(FRONTEND).write(tmp_path)
    with DirectorySource(tmp_path, poll_interval=0.02, settle=0.1) as source:
        (tmp_path / "root-cert.pem").write_bytes(b"nope")
        assert wait_for(lambda: source.counters.errors >= 1)
        good = ca.issue(FRONTEND)
        good.write(tmp_path)
        assert wait_for(lambda: source.current().fingerprint == good.fingerprint)


def test_directory_rotation_rejected_at_runtime(tmp_path: Path, ca: LocalCA) -> None:
    ca.issue(FRONTEND).write(tmp_path)
    with DirectorySource(
        tmp_path, poll_interval=0, trust_domain="cluster.local", settle=0
    ) as source:
        ca.issue("spiffe://evil.org/ns/default/sa/x").write(tmp_path)
        assert not source.refresh()
        ca.issue(FRONTEND, now=dt.datetime.now(UTC) - dt.timedelta(days=3)).write(tmp_path)
        assert not source.refresh()
        LocalCA.create().issue(FRONTEND).write(tmp_path)  # self-consistent, but another root
        source_bundle = source.current().trust_bundle_pem
        assert source.refresh()  # the files carry their own root: accepted, the bundle changes
        assert source.current().trust_bundle_pem != source_bundle
        assert source.counters.errors == 2 and source.counters.rotations == 1


@pytest.mark.parametrize(
    "problem", ["expired", "not_yet_valid", "trust_domain", "key", "foreign_ca", "missing"]
)
def test_directory_start_errors(tmp_path: Path, ca: LocalCA, problem: str) -> None:
    now = dt.datetime.now(UTC)
    expected = {
        "expired": "expired at",
        "not_yet_valid": "not yet valid",
        "trust_domain": "expected 'cluster.local'",
        "key": "private key does not match",
        "foreign_ca": "does not lead to the trust bundle",
        "missing": "cannot read",
    }[problem]
    if problem == "expired":
        ca.issue(FRONTEND, now=now - dt.timedelta(days=2)).write(tmp_path)
    elif problem == "not_yet_valid":
        ca.issue(FRONTEND, now=now + dt.timedelta(hours=1)).write(tmp_path)
    elif problem == "trust_domain":
        ca.issue("spiffe://other.org/ns/default/sa/frontend-sa").write(tmp_path)
    elif problem == "key":
        ca.issue(FRONTEND).write(tmp_path)
        (tmp_path / "key.pem").write_bytes(ca.issue(FRONTEND).key_pem)
    elif problem == "foreign_ca":
        LocalCA.create().issue(FRONTEND).write(tmp_path)
        (tmp_path / "root-cert.pem").write_bytes(ca.trust_bundle_pem)
    source = DirectorySource(tmp_path, trust_domain="cluster.local")
    with pytest.raises(CertificateError, match=expected) as info:
        source.start()
    assert str(tmp_path) in str(info.value)
    assert not _identity_threads()
    source.close()


def test_directory_custom_names(tmp_path: Path, ca: LocalCA) -> None:
    cert = ca.issue(BACKEND)
    (tmp_path / "tls.crt").write_bytes(cert.cert_chain_pem)
    (tmp_path / "tls.key").write_bytes(cert.key_pem)
    (tmp_path / "ca.crt").write_bytes(cert.trust_bundle_pem)
    with DirectorySource(
        tmp_path, cert_chain="tls.crt", key="tls.key", trust_bundle="ca.crt", poll_interval=0
    ) as source:
        assert source.current().spiffe_id == SpiffeId.parse(BACKEND)


def test_directory_symlink_swap(tmp_path: Path, ca: LocalCA) -> None:
    """Kubernetes secret volumes rotate by re-pointing a '..data' symlink."""
    first, second = ca.issue(FRONTEND), ca.issue(FRONTEND)
    first.write(tmp_path / "v1")
    second.write(tmp_path / "v2")
    os.symlink("v1", tmp_path / "..data")
    for name in ("cert-chain.pem", "key.pem", "root-cert.pem"):
        os.symlink(f"..data/{name}", tmp_path / name)
    with DirectorySource(tmp_path, poll_interval=0) as source:
        assert source.current().fingerprint == first.fingerprint
        os.symlink("v2", tmp_path / "..data_tmp")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        assert source.refresh()
        assert source.current().fingerprint == second.fingerprint


def test_directory_subscriber_errors_are_contained(
    tmp_path: Path, ca: LocalCA, caplog: pytest.LogCaptureFixture
) -> None:
    ca.issue(FRONTEND).write(tmp_path)
    got: list[int] = []
    with DirectorySource(tmp_path, poll_interval=0) as source:

        def boom(_cert: WorkloadCertificate) -> None:
            raise RuntimeError("subscriber bug")

        source.subscribe(boom)
        unsubscribe = source.subscribe(lambda c: got.append(c.version))
        ca.issue(FRONTEND).write(tmp_path)
        assert source.refresh()
        assert got == [2]
        assert source.counters.callback_errors == 1
        assert "subscriber failed" in caplog.text
        unsubscribe()
        ca.issue(FRONTEND).write(tmp_path)
        assert source.refresh()
        assert got == [2]


def test_directory_reports_expiry_once(
    tmp_path: Path, ca: LocalCA, caplog: pytest.LogCaptureFixture
) -> None:
    ca.issue(FRONTEND, ttl=dt.timedelta(hours=1)).write(tmp_path)
    clock = FakeClock()
    with DirectorySource(tmp_path, poll_interval=0.01, clock=clock) as source:
        clock.advance(2 * 3600)
        assert wait_for(lambda: source.counters.expired == 1)
        time.sleep(0.05)
        assert source.counters.expired == 1
        assert "expired" in caplog.text


def test_close_is_idempotent_and_joins(tmp_path: Path, ca: LocalCA) -> None:
    ca.issue(FRONTEND).write(tmp_path)
    source = DirectorySource(tmp_path, poll_interval=0.01)
    source.start()
    source.start()  # no second thread
    assert len(_identity_threads()) == 1
    source.close()
    source.close()
    assert not _identity_threads()


# -- CASource -------------------------------------------------------------------


def test_ca_source_renews_at_half_life(ca: LocalCA) -> None:
    clock = FakeClock()
    rotations: list[WorkloadCertificate] = []
    source = CASource(ca, FRONTEND, ttl=dt.timedelta(hours=24), clock=clock, check_interval=3600)
    with source:
        source.subscribe(rotations.append)
        first = source.current()
        assert first.version == 1 and first.spiffe_id == SpiffeId.parse(FRONTEND)
        half = first.not_before + (first.not_after - first.not_before) / 2
        assert source.renewal_time() == half
        # just before half-life: nothing
        clock.t = half.timestamp() - 1
        assert not source.renewal_due()
        assert not source.tick()
        assert source.current() is first
        # at half-life: renewed, issued at the fake "now"
        clock.t = half.timestamp()
        assert source.tick()
        second = source.current()
        assert second.version == 2 and second.serial_number != first.serial_number
        # issued at the fake "now", backdated one minute (X.509 keeps whole seconds)
        assert abs((second.not_before - (half - dt.timedelta(minutes=1))).total_seconds()) < 1
        assert [c.version for c in rotations] == [2]
        assert not source.tick()
        assert source.counters.rotations == 1 and source.counters.errors == 0


def test_ca_source_thread_renews_with_fake_clock(ca: LocalCA) -> None:
    clock = FakeClock()
    renewed = threading.Event()
    with CASource(
        ca, FRONTEND, ttl=dt.timedelta(hours=1), clock=clock, check_interval=0.01
    ) as source:
        source.subscribe(lambda _c: renewed.set())
        assert not renewed.wait(0.05)  # the fake clock has not moved
        clock.advance(31 * 60)
        assert renewed.wait(2)
        assert source.current().version == 2


class FlakyIssuer:
    """A real LocalCA that fails the first ``failures`` issuances."""

    def __init__(self, ca: LocalCA, failures: int) -> None:
        self.ca = ca
        self.failures = failures
        self.calls = 0

    def issue(
        self,
        spiffe_id: SpiffeId | str,
        *,
        ttl: dt.timedelta = dt.timedelta(hours=24),
        now: dt.datetime | None = None,
    ) -> WorkloadCertificate:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"CA unavailable (call {self.calls})")
        return self.ca.issue(spiffe_id, ttl=ttl, now=now)


def test_ca_source_retries_renewal(ca: LocalCA, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    issuer = FlakyIssuer(ca, failures=0)
    with CASource(
        issuer, FRONTEND, clock=clock, check_interval=3600, retry_attempts=3, retry_wait=0
    ) as source:
        issuer.failures = issuer.calls + 2  # the next two calls fail
        clock.advance(13 * 3600)
        assert source.tick()
        assert issuer.calls == 4  # start + 2 failures + success
        assert source.current().version == 2
        assert source.counters.errors == 0
        assert "renewal attempt 1 failed" in caplog.text


def test_ca_source_keeps_certificate_when_renewal_fails(
    ca: LocalCA, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    issuer = FlakyIssuer(ca, failures=0)
    with CASource(
        issuer, FRONTEND, clock=clock, check_interval=3600, retry_attempts=2, retry_wait=0
    ) as source:
        first = source.current()
        issuer.failures = 10**6
        clock.advance(13 * 3600)
        assert not source.tick()
        assert source.current() is first
        assert source.counters.errors == 1
        assert "renewing the certificate failed after 2 attempts, keeping version 1" in caplog.text
        issuer.failures = 0
        assert source.tick()
        assert source.current().version == 2


def test_ca_source_renewal_rejects_bad_certificate(ca: LocalCA) -> None:
    """A renewal whose certificate fails the checks counts as a failure."""

    class SkewedIssuer:
        skew = dt.timedelta(0)

        def issue(
            self,
            spiffe_id: SpiffeId | str,
            *,
            ttl: dt.timedelta = dt.timedelta(hours=24),
            now: dt.datetime | None = None,
        ) -> WorkloadCertificate:
            assert now is not None
            return ca.issue(spiffe_id, ttl=ttl, now=now + self.skew)

    clock = FakeClock()
    issuer = SkewedIssuer()
    with CASource(
        issuer, FRONTEND, clock=clock, check_interval=3600, retry_attempts=2, retry_wait=0
    ) as source:
        issuer.skew = dt.timedelta(hours=5)  # the CA's clock is ahead: not yet valid
        clock.advance(13 * 3600)
        assert not source.tick()
        assert source.counters.errors == 1 and source.current().version == 1


def test_ca_source_start_errors(ca: LocalCA) -> None:
    with pytest.raises(
        CertificateError, match=r"trust domain 'other\.org', expected 'cluster\.local'"
    ):
        CASource(ca, "spiffe://other.org/ns/a/sa/b", trust_domain="cluster.local").start()
    with pytest.raises(
        CertificateError, match="issuing the first certificate failed: CA unavailable"
    ):
        CASource(FlakyIssuer(ca, failures=1), FRONTEND).start()

    class OldIssuer:
        def issue(
            self,
            spiffe_id: SpiffeId | str,
            *,
            ttl: dt.timedelta = dt.timedelta(hours=24),
            now: dt.datetime | None = None,
        ) -> WorkloadCertificate:
            return ca.issue(spiffe_id, ttl=ttl, now=dt.datetime.now(UTC) - dt.timedelta(days=2))

    with pytest.raises(CertificateError, match="expired"):
        CASource(OldIssuer(), FRONTEND).start()

    class WrongIdIssuer:
        def issue(
            self,
            spiffe_id: SpiffeId | str,
            *,
            ttl: dt.timedelta = dt.timedelta(hours=24),
            now: dt.datetime | None = None,
        ) -> WorkloadCertificate:
            return ca.issue(BACKEND, ttl=ttl, now=now)

    with pytest.raises(CertificateError, match="not the requested"):
        CASource(WrongIdIssuer(), FRONTEND).start()
    with pytest.raises(ValueError, match="renew_at"):
        CASource(ca, FRONTEND, renew_at=1.5)


def test_ca_source_close_interrupts_retry_sleep(ca: LocalCA) -> None:
    clock = FakeClock()
    issuer = FlakyIssuer(ca, failures=0)
    source = CASource(
        issuer, FRONTEND, clock=clock, check_interval=0.01, retry_attempts=5, retry_wait=30
    )
    source.start()
    issuer.failures = 10**6
    clock.advance(13 * 3600)
    assert wait_for(lambda: issuer.calls >= 2)  # the thread is now in a 30 s back-off
    start = time.monotonic()
    source.close()
    assert time.monotonic() - start < 2


# -- MemorySource and clocks ----------------------------------------------------


def test_memory_source(ca: LocalCA) -> None:
    first = ca.issue(FRONTEND)
    with MemorySource(first) as source:
        assert source.current().version == 1
        assert source.update(ca.issue(FRONTEND)).version == 2
        with pytest.raises(CertificateError):
            source.update(ca.issue(FRONTEND, now=dt.datetime.now(UTC) - dt.timedelta(days=2)))
        assert source.current().version == 2 and source.counters.errors == 1
    with pytest.raises(CertificateError, match="expired"):
        MemorySource(ca.issue(FRONTEND, now=dt.datetime.now(UTC) - dt.timedelta(days=2))).start()


def test_wall_clock() -> None:
    assert abs(WallClock().now() - time.time()) < 1


def test_rewrites_never_install_a_mismatched_pair(tmp_path: Path, ca: LocalCA) -> None:
    """Files rewritten one by one while polled fast: a transient key/chain mismatch may be
    seen and counted, but never installed."""
    ca.issue(FRONTEND).write(tmp_path)
    with DirectorySource(tmp_path, poll_interval=0.001) as source:
        for _ in range(20):
            ca.issue(FRONTEND).write(tmp_path)
            cur = source.current()
            WorkloadCertificate.create(cur.chain, cur.private_key, cur.trust_bundle)  # key matches
        final = ca.issue(FRONTEND)
        final.write(tmp_path)
        assert wait_for(lambda: source.current().fingerprint == final.fingerprint)
        assert source.counters.errors == 0  # transient mismatches are retried, not errors


def test_directory_settle_window(
    tmp_path: Path, ca: LocalCA, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure on freshly written files is retried silently; once they are old, it counts."""
    ca.issue(FRONTEND).write(tmp_path)
    with DirectorySource(tmp_path, poll_interval=0, settle=0.3) as source:
        caplog.set_level(logging.WARNING, logger="inmesh.identity")
        new = ca.issue(FRONTEND)
        (tmp_path / "key.pem").write_bytes(new.key_pem)  # the chain is not written yet
        assert not source.refresh()
        assert source.counters.errors == 0 and caplog.text == ""
        (tmp_path / "cert-chain.pem").write_bytes(new.cert_chain_pem)
        assert source.refresh()
        assert source.counters.errors == 0
        (tmp_path / "key.pem").write_bytes(b"broken")
        assert not source.refresh()
        assert source.counters.errors == 0
        time.sleep(0.35)
        assert not source.refresh()
        assert source.counters.errors == 1
        assert "keeping the certificate in use (version 2)" in caplog.text
        assert not source.refresh()
        assert source.counters.errors == 1
