"""The scanner service at the hardware: HID, serial and camera scanners (docs/scanners.md),
each scan turned into one `store_contract.scans.Scan`.

`hid` and `serial_port` read keyboard-wedge and serial scanners, `decode` reads codes from
one image (zxing-cpp), `camera` watches an OpenCV source and sends one scan per
presentation, `codes` says which product a code stands for (every kind of scanner uses it),
`python -m pos_bridge.scanner` is the command.
"""
