//! Property tests of session ids and the cookie parser: arbitrary input never panics, minted ids
//! parse back to their slot, and a forged id never names slot 0 or a slot past 65535.

use http::{HeaderMap, HeaderValue, header::COOKIE};
use proptest::collection::vec;
use proptest::prelude::*;

use super::{COOKIE_NAME, cookie_value, mint_id, parse_id};

proptest! {
    #![proptest_config(crate::prop::config())]

    #[test]
    fn prop_minted_ids_parse_back_to_their_slot(slot in 1usize..=65535) {
        prop_assert_eq!(parse_id(&mint_id(slot)), Some(slot));
    }

    /// Forged ids: whatever the text, a parsed slot is in 1..=99999 (five digits, no leading
    /// zero), and the id is exactly `slot.32hex`.
    #[test]
    fn prop_forged_ids_never_panic_and_name_a_plausible_slot(id in prop_oneof![
        ".{0,60}",
        "[0-9]{0,7}\\.[0-9a-fA-F]{30,34}",
    ]) {
        if let Some(slot) = parse_id(&id) {
            prop_assert!((1..=99_999).contains(&slot), "{} from {:?}", slot, id);
            prop_assert_eq!(id.len(), slot.to_string().len() + 1 + 32);
        }
    }

    /// The session cookie is found among arbitrary other cookies, and arbitrary Cookie headers
    /// never panic the parser.
    #[test]
    fn prop_the_cookie_is_found_among_any_others(
        before in vec(("[a-zA-Z]{1,8}", "[a-zA-Z0-9]{0,8}"), 0..20),
        after in vec(("[a-zA-Z]{1,8}", "[a-zA-Z0-9]{0,8}"), 0..20),
        slot in 1usize..100,
        noise in vec(any::<u8>(), 0..200),
    ) {
        let id = mint_id(slot);
        let pairs: Vec<String> = before
            .iter()
            .filter(|(k, _)| k != COOKIE_NAME)
            .map(|(k, v)| format!("{k}={v}"))
            .chain([format!("{COOKIE_NAME}={id}")])
            .chain(after.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&noise) {
            headers.append(COOKIE, v);
            let _ = cookie_value(&headers, COOKIE_NAME);
        }
        headers.append(COOKIE, HeaderValue::from_str(&pairs.join("; ")).expect("a header"));
        if cookie_value(&headers, COOKIE_NAME).is_none_or(|v| v != id) {
            // Only the noise line may have named the cookie first.
            let noise_names_it = String::from_utf8_lossy(&noise).contains(COOKIE_NAME);
            prop_assert!(noise_names_it, "lost {} among {:?}", id, pairs);
        }
    }
}
