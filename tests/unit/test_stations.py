

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
