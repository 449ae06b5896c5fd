"""Torque Pro CSV export → canonical samples."""

from __future__ import annotations

import pytest

from autopdm import store
from autopdm.ingest import csvlogs

HEADER = ("GPS Time, Device Time, Longitude, Latitude,GPS Speed (Meters/second), Horizontal Dilution of Precision, "
          "Altitude, Bearing, G(x), G(y), G(z), G(calibrated),Speed (OBD)(km/h),Engine RPM(rpm),Engine Load(%),"
          "Engine Coolant Temperature(°C),Intake Air Temperature(°C),Throttle Position(Manifold)(%),"
          "Fuel Level (From Engine ECU)(%),Voltage (Control Module)(V),Ambient air temp(°C),Fuel Rail Pressure(psi)")


def _row(t, speed, rpm, volt="14.2"):
    return (f"Sat Jun 18 10:05:{t:02d} GMT+01:00 2016,18-Jun-2016 10:05:{t:02d}.500,-1.2,51.7,0,1,100,0,0.1,0.2,9.8,0.0,"
            f"{speed},{rpm},21.5,45,22,14.1,63.1,{volt},17,35")


def test_torque_export(home, tmp_path):
    f = tmp_path / "trackLog.csv"
    f.write_text("\n".join([HEADER, _row(10, 0, 812), _row(11, 4, 1020, "-"), _row(12, "abc", 1500),
                            HEADER, _row(40, 36, 1800)]) + "\n")
    res = csvlogs.import_files([f], "torque", "KMHDH41EXFU123456", paths=home)
    assert res[0].unknown_columns == ["Fuel Rail Pressure(psi)"]        # reported, not fatal
    assert res[0].written == 3 and res[0].quarantined == 1               # the bad speed is quarantined
    s = store.read_samples(home)
    # Device Time is the phone's local clock; GPS Time says GMT+01:00 → UTC is an hour earlier
    assert str(s["ts"].iloc[0]) == "2016-06-18 09:05:10.500000+00:00"
    assert s["control_module_voltage_v"].isna().sum() == 1              # "-" = no reading → null, not 0
    assert s["ambient_air_temp_c"].eq(17).all() and s["throttle_pct"].eq(14.1).all()
    q = store.read_quarantine(home)
    assert "speed_kph: cannot parse 'abc'" in q["reason"].iloc[0]


def test_not_a_torque_file(home, tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("a,b\n1,2\n")
    with pytest.raises(csvlogs.CsvFormatError, match="Device Time"):
        csvlogs.import_files([f], "torque", "KMHDH41EXFU123456", paths=home)
