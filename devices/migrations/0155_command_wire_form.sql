-- What the device's protocol encoder receives for a command (devices/commands/encoding.py):
-- the encoder's command name and parameters, fixed at submission so every attempt sends the
-- same thing (a top-up keeps its purchase sequence), and the encoded frame as a preview.
ALTER TABLE ops.commands
    ADD COLUMN wire_command text  NOT NULL DEFAULT '',
    ADD COLUMN wire_params  jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN preview_hex  text  NOT NULL DEFAULT '';
