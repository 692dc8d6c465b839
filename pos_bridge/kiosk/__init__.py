"""The kiosk box's presence agent (docs/kiosk-box.md, "Presence: the kiosk agent").

A kiosk box runs Chromium on the kiosk page and nothing else that talks to the store bus.
The agent puts the kiosk on the bus as its `kiosk` device, so staff see it online, see it
go offline when the box dies (the Last Will), and see whether its screen can work: is the
browser running, and does the store box answer the kiosk page at all.
"""
