"""Wake-cycle plans and their execution on a timeline: which steps, which states they charge."""

import pytest

from harness.energy.energest import DeviceTimeline
from harness.energy.profile import DeviceProfile
from harness.energy.wakecycle import (NetworkOutcome, assumed_outcome, check_key_transport, check_plan,
                                      full_handshake_ops, plan_wake, run_steps)


@pytest.fixture(scope="module")
def fipy():
    return DeviceProfile.load("fipy")


@pytest.fixture(scope="module")
def micropython():
    return DeviceProfile.load("fipy-micropython")


def names(steps):
    return [s.name for s in steps]


def test_plans_follow_the_wake_cycle(fipy):
    plain = plan_wake(fipy, "qkd", key_refresh_due=False)
    assert names(plain) == ["boot", "associate", "sense", "encrypt", "publish", "sleep"]
    assert names(plan_wake(fipy, "dkg", key_refresh_due=False)) == names(plain)
    assert names(plan_wake(fipy, "qkd", key_refresh_due=True, qkd_transport="psk_wrap")) == [
        "boot", "associate", "qkd_fetch", "qkd_decrypt", "sense", "encrypt", "publish", "sleep"]
    assert names(plan_wake(fipy, "dkg", key_refresh_due=True)) == [
        "boot", "associate", "dkg_keygen", "dkg_exchange", "dkg_agree", "dkg_kdf", "sense", "encrypt",
        "publish", "sleep"]
    assert names(plan_wake(fipy, "dkg", key_refresh_due=True, keygen_before_association=True))[:3] == [
        "boot", "dkg_keygen", "associate"]
    assert names(plan_wake(fipy, "dkg", key_refresh_due=True, keygen_before_association=True,
                           sense_before_association=True))[:4] == ["boot", "sense", "dkg_keygen", "associate"]
    assert names(plan_wake(fipy, "qkd", key_refresh_due=False, sense_before_association=True)) == [
        "boot", "sense", "associate", "encrypt", "publish", "sleep"]
    x = plan_wake(fipy, "dkg", key_refresh_due=True, dkg_curve="x25519")
    assert [s.op for s in x if s.kind == "compute"][:2] == ["dkg.x25519_keygen", "dkg.x25519_agree"]
    auth = plan_wake(fipy, "dkg", key_refresh_due=True, dkg_authenticated=True)
    assert {"dkg_sign", "dkg_verify"} <= set(names(auth))
    publish = {q: plan_wake(fipy, "qkd", key_refresh_due=False, mqtt_qos=q)[-2].round_trips
               for q in (0, 1, 2)}
    assert publish == {0: 2, 1: 3, 2: 4}


def test_the_full_handshake_follows_the_profiles_tls_stack(fipy, micropython):
    mutual = [name for name, _ in full_handshake_ops(fipy)]
    assert mutual == ["tls_ecdhe_keygen", "tls_ecdhe_agree", "tls_verify_certificate", "tls_verify_key_exchange",
                      "tls_sign_certificate_verify"]
    # ussl defaults: no client certificate, no certificate check; the key exchange signature is still checked.
    assert [name for name, _ in full_handshake_ops(micropython)] == [
        "tls_ecdhe_keygen", "tls_ecdhe_agree", "tls_verify_key_exchange"]
    steps = plan_wake(micropython, "qkd", key_refresh_due=True, qkd_transport="tls_full")
    public_key = [s for s in steps if s.kind == "compute" and s.op.startswith("tls.")]
    assert sum(micropython.op_seconds(s.op) for s in public_key) == pytest.approx(
        sum(micropython.op_seconds(op) for _, op in full_handshake_ops(micropython)))
    # The handshake is the TLS stack's ECC, not DKG's.
    assert micropython.op_seconds(public_key[0].op) == micropython.op_seconds("tls.ecc_keygen_p256")
    assert micropython.op_seconds(public_key[0].op) < micropython.op_seconds("dkg.ecc_keygen_p256")


def test_a_device_that_cannot_resume_refuses_tls_resume(fipy, micropython):
    check_key_transport(fipy, "tls_resume")
    for transport in ("tls_full", "psk_wrap"):
        check_key_transport(micropython, transport)
    with pytest.raises(ValueError, match=r"'fipy-micropython' cannot resume a TLS session"):
        plan_wake(micropython, "qkd", key_refresh_due=True, qkd_transport="tls_resume")
    # DKG fetches no key: the transport does not matter to its plan (check_plan refuses it for a run).
    assert plan_wake(micropython, "dkg", key_refresh_due=True, qkd_transport="tls_resume")
    with pytest.raises(ValueError, match="cannot resume"):
        check_plan(micropython, "tls_resume")


def test_bad_plan_arguments(fipy):
    for kwargs, message in ((dict(mode="psk"), "mode must be"), (dict(qkd_transport="dtls"), "qkd_transport"),
                            (dict(dkg_curve="p521"), "dkg_curve"), (dict(mqtt_qos=3), "mqtt_qos")):
        args = dict(mode="qkd", key_refresh_due=True) | kwargs
        with pytest.raises(ValueError, match=message):
            plan_wake(fipy, **args)


def test_run_steps_charges_each_step_as_declared(fipy):
    tl = DeviceTimeline(fipy, "d1")
    steps = plan_wake(fipy, "dkg", key_refresh_due=True, reading_bytes=200)
    measured = {"dkg_exchange": NetworkOutcome(0.050, bytes_tx=150), "publish": NetworkOutcome(0.080, 600)}
    records = run_steps(tl, steps, lambda step: measured.get(step.name), wake_until=60.0)
    by_name = {r.name: r for r in records}
    assert by_name["boot"].charged == pytest.approx({"cpu": fipy.timing_s("boot")})
    assert by_name["associate"].charged == pytest.approx({"radio_listen": fipy.timing_s("wifi_associate")})
    # Listens while associated.
    assert by_name["dkg_keygen"].charged == pytest.approx({"radio_listen": fipy.op_seconds("dkg.ecc_keygen_p256")})
    assert by_name["dkg_agree"].charged == pytest.approx({"radio_listen": fipy.op_seconds("dkg.ecdh_p256")})
    exchange = by_name["dkg_exchange"].charged
    assert exchange["radio_tx"] == pytest.approx(fipy.tx_airtime_s(150))
    assert sum(exchange.values()) == pytest.approx(0.050)
    assert by_name["sense"].charged == pytest.approx({"radio_listen": fipy.timing_s("sensor_read")})
    assert by_name["encrypt"].charged == pytest.approx({"radio_listen": fipy.op_seconds("aes", 200)})
    assert set(by_name["sleep"].charged) == {"deep_sleep"} and tl.now == 60.0
    for step, record in zip(steps, records):  # declared states cover what was charged
        associated = step.name not in ("boot", "associate")
        assert set(record.charged) <= set(step.states(fipy, associated))
    assert sum(tl.totals().values()) == pytest.approx(60.0)
    assert not tl.associated


def test_sensing_and_keygen_before_association_are_cpu_time(micropython):
    tl = DeviceTimeline(micropython, "d1")
    steps = plan_wake(micropython, "dkg", key_refresh_due=True, keygen_before_association=True,
                      sense_before_association=True)
    records = {r.name: r for r in run_steps(tl, steps, lambda s: assumed_outcome(micropython, s, 0.01),
                                            wake_until=60.0)}
    assert records["sense"].charged == pytest.approx({"cpu": micropython.timing_s("sensor_read")})
    assert records["dkg_keygen"].charged == pytest.approx({"cpu": micropython.op_seconds("dkg.ecc_keygen_p256")})
    assert records["dkg_agree"].charged == pytest.approx({"radio_listen": micropython.op_seconds("dkg.ecdh_p256")})


def test_run_steps_needs_outcomes_and_association(fipy):
    steps = plan_wake(fipy, "qkd", key_refresh_due=False)
    with pytest.raises(ValueError, match="must return a NetworkOutcome"):
        run_steps(DeviceTimeline(fipy), steps, lambda step: None, wake_until=60.0)
    with pytest.raises(ValueError, match="not associated"):
        run_steps(DeviceTimeline(fipy), [steps[-2]], lambda step: NetworkOutcome(0.01))
    with pytest.raises(ValueError, match="give wake_until"):
        run_steps(DeviceTimeline(fipy), steps, lambda s: assumed_outcome(fipy, s, 0.01))
