"""A refusal the parser cannot foresee, made by the real database.

Every check the payload models know runs before the database sees a message; what
the database still refuses is whatever they do not know. The suite stands that in
with a trigger that refuses one power value with a data exception (SQLSTATE 22023),
as a constraint added by a later migration, a new PostgreSQL limit or an extension
would: the message passes validation and the database says no.
"""

from __future__ import annotations

import psycopg

# The `active_power_kw` the database refuses in tests that install the refusal.
REFUSED_KW = 13.13
_TRIGGER = f"""
CREATE FUNCTION refuse_power() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.active_power_kw = {REFUSED_KW} THEN
        RAISE EXCEPTION 'active_power_kw % is refused by this database', NEW.active_power_kw
            USING ERRCODE = '22023';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_power BEFORE INSERT ON readings_energy
    FOR EACH ROW EXECUTE FUNCTION refuse_power();
"""


def install_refusal(database_url: str) -> None:
    """Make the database refuse energy readings of REFUSED_KW."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(_TRIGGER)
