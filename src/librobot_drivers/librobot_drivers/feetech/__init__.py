"""Feetech STS serial-bus servos (the SO-100's STS3215): the control table, a bus on
feetech-servo-sdk with retries and clear errors, calibration, and an emulated bus for tests."""
