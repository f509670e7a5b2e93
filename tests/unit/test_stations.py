

def test_the_arp_table_is_raised_to_fit_every_station_and_never_lowered(tmp_path):
    from harness.stations import NEIGHBOUR_SYSCTLS, size_neighbour_table

    for key, value in zip(NEIGHBOUR_SYSCTLS, (128, 512, 1024)):  # a stock kernel's
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_text(f"{value}\n")
    changed = size_neighbour_table(13_000, tmp_path)
    thresh3 = int((tmp_path / NEIGHBOUR_SYSCTLS[2]).read_text())
    thresh2 = int((tmp_path / NEIGHBOUR_SYSCTLS[1]).read_text())
    # Every device's entry for the gateway and the gateway's for it, under the soft limit.
    assert thresh2 >= 2 * 13_000 and thresh3 == 2 * thresh2
    assert changed[NEIGHBOUR_SYSCTLS[2]] == [1024, thresh3]
    assert changed[NEIGHBOUR_SYSCTLS[1]] == [512, thresh2]
    assert int((tmp_path / NEIGHBOUR_SYSCTLS[0]).read_text()) * 2 == thresh2
    assert size_neighbour_table(100, tmp_path) == {}  # already big enough: left alone
    assert int((tmp_path / NEIGHBOUR_SYSCTLS[2]).read_text()) == thresh3


def _proc_sys(root, values):
    for key, value in values.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text(f"{value}\n")


def test_station_defaults_hold_while_stations_are_made_and_are_restored_after(tmp_path):
    from harness.stations import INHERIT_SYSCTL, STATION_DEFAULTS, station_defaults

    stock = {INHERIT_SYSCTL: "0", "net/ipv4/conf/default/arp_notify": "0", "net/ipv6/conf/default/disable_ipv6": "0"}
    _proc_sys(tmp_path, stock)
    with station_defaults(tmp_path) as inherited:
        assert inherited
        assert (tmp_path / INHERIT_SYSCTL).read_text() == "3"  # from the namespace that makes them
        assert all((tmp_path / key).read_text() == value for key, value in STATION_DEFAULTS.items())
    assert {key: (tmp_path / key).read_text() for key in stock} == stock
    # Restored when making the stations fails too.
    try:
        with station_defaults(tmp_path):
            raise RuntimeError("ip -batch failed")
    except RuntimeError:
        pass
    assert {key: (tmp_path / key).read_text() for key in stock} == stock


def test_a_kernel_without_inherited_defaults_is_told_apart_and_left_as_it_was(tmp_path):
    from harness.stations import INHERIT_SYSCTL, station_defaults

    before = {"net/ipv4/conf/default/arp_notify": "0", "net/ipv6/conf/default/disable_ipv6": "0"}
    _proc_sys(tmp_path, before)  # no devconf_inherit_init_net (Linux < 5.1)
    with station_defaults(tmp_path) as inherited:
        assert not inherited
        assert {key: (tmp_path / key).read_text().strip() for key in before} == before
    assert not (tmp_path / INHERIT_SYSCTL).exists()


def test_a_station_announces_itself_with_a_well_formed_gratuitous_arp():
    from scapy.layers.l2 import ARP, Ether

    from harness.stations import garp_frame

    frame = Ether(garp_frame("02:aa:00:00:00:07", "10.1.0.17"))
    assert frame.dst == "ff:ff:ff:ff:ff:ff" and frame.src == "02:aa:00:00:00:07"
    arp = frame[ARP]
    assert (arp.op, arp.psrc, arp.pdst, arp.hwsrc) == (1, "10.1.0.17", "10.1.0.17", "02:aa:00:00:00:07")
    assert len(bytes(frame)) == 42


def test_stations_announce_in_turns_by_cell_so_no_cell_port_gets_a_burst():
    from harness.stations import interleaved, plan

    hosts = [(f"d{i}", f"10.1.{i // 250}.{i % 250 + 2}", f"02:51:0a:00:{i // 256:02x}:{i % 256:02x}", 16)
             for i in range(1, 1001)]
    stations = plan("pytest-run", 2, hosts, max_ports=32)
    order = interleaved(stations)
    assert sorted(s.name for s in order) == sorted(s.name for s in stations)  # each exactly once
    # 1,000 stations in 32 cells (31 of 32 stations, one of 8): a cell's next announcement comes
    # only after every other cell still announcing has had its turn.
    last_seen, gaps = {}, []
    for position, s in enumerate(order):
        if s.cell in last_seen:
            gaps.append(position - last_seen[s.cell])
        last_seen[s.cell] = position
    assert len(last_seen) == 32 and min(gaps) == 31
