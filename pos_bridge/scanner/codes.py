"""What a scanned code means to a shop: the product behind it, if it is one.

Every kind of scanner (camera, HID, serial) calls `product_of(text, symbology)`, so a code
means the same whichever scanner read it. The rules (which symbology is trusted how far,
GTINs and GS1 element strings read by `biip`) live in `store_contract.scans`, because the
edge reads codes the same way when it looks a product up by any form of its GTIN
(docs/protocol.md, "Scans"). A code that is not a product gives `None`: the scan still
goes through untouched, it just carries no `product`.
"""

from __future__ import annotations

from store_contract.scans import product_of

__all__ = ["product_of"]
