"""The scanner service at the hardware: HID, serial and camera scanners (docs/scanners.md)."""
