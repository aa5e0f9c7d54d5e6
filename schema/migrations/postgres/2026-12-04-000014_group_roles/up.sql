-- Group roles (docs/protocol.md#group-roles): the admins the hub tracks from the group's
-- roles extension, as its canonical JSON `{"admins":[…]}`; NULL for a group without roles.
ALTER TABLE groups ADD COLUMN roles TEXT;
