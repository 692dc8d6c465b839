"""The chain's products (revision 0002): what `edge-hub products import` keeps and sends to
every store as `product` changes (docs/hub.md, docs/sync.md).

One row per sku and currency: a chain with stores in two currencies prices a product
twice, and each store applies the price in its own currency.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("unit_minor", sa.BigInteger, nullable=False),
        sa.Column("categories", sa.Text, nullable=False),
        sa.Column("updated_ts", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("products")
