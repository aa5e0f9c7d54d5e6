DROP TABLE transaction_ids;
DROP TABLE welcomes;
DROP TABLE group_messages;
DROP TABLE memberships;
DROP TABLE groups;
DROP TABLE key_packages;
DROP TABLE stream_position;
