//! Diesel table definitions, shared by both backends (the SQL types are chosen to map alike).

diesel::table! {
    users (user_id) {
        user_id -> Text,
        localpart -> Text,
        password_hash -> Text,
        created_ts -> BigInt,
    }
}

diesel::table! {
    devices (user_id, device_id) {
        user_id -> Text,
        device_id -> Text,
        display_name -> Nullable<Text>,
        signature_key -> Nullable<Binary>,
        created_ts -> BigInt,
        last_seen_ts -> BigInt,
    }
}

diesel::table! {
    sessions (session_id) {
        session_id -> Text,
        user_id -> Text,
        device_id -> Text,
        created_ts -> BigInt,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Binary,
        session_id -> Text,
        rotated -> Bool,
        expires_ts -> BigInt,
    }
}

diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::allow_tables_to_appear_in_same_query!(users, devices, sessions, refresh_tokens);
