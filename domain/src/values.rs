//! Value types validated once, at the edge, so that an invalid one cannot exist.
//!
//! Each type has a `parse` constructor that says what is wrong in a [`FieldError`]; the HTTP
//! layer collects those into a 422 with one entry per field.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One broken rule on one input field, as the client sent it (`lines[2].quantity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Stock-keeping unit: 2 to 32 characters of `A-Z`, `0-9` and `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok_len = (2..=32).contains(&raw.len());
        let ok_start = raw.starts_with(|c: char| c.is_ascii_uppercase());
        let ok_chars = raw
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
        if ok_len && ok_start && ok_chars {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be 2-32 characters of A-Z, 0-9 and '-', starting with a letter".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Sku> for String {
    fn from(value: Sku) -> Self {
        value.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many units of one SKU an order line asks for: 1 to 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 1000;

    pub fn parse(raw: i64) -> Result<Self, String> {
        match u32::try_from(raw) {
            Ok(q) if (1..=Self::MAX).contains(&q) => Ok(Self(q)),
            _ => Err(format!("must be between 1 and {}", Self::MAX)),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Quantity {
    type Error = String;
    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::parse(i64::from(value))
    }
}

impl From<Quantity> for u32 {
    fn from(value: Quantity) -> Self {
        value.0
    }
}

/// ISO 4217 currency code: three uppercase letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() == 3 && raw.chars().all(|c| c.is_ascii_uppercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be an ISO 4217 code such as EUR".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount in minor units (`1299` is 12.99). Currency travels beside it, per order.
pub type MinorUnits = u64;

/// The largest unit price the catalog accepts (one million in major units).
pub const MAX_UNIT_PRICE: MinorUnits = 100_000_000;

/// A customer's id. Development logins derive it from a name, so `alice` is always the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(pub Uuid);

impl CustomerId {
    /// A UUID is taken as it is; anything else (a name) maps to a stable UUID v5.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = line_of_text(raw, CUSTOMER_NAME_MAX)
            .map_err(|_| "must be a UUID or a name of 1-100 printable characters".to_owned())?;
        Ok(Self(Uuid::parse_str(raw).unwrap_or_else(|_| {
            Uuid::new_v5(&CUSTOMER_NAMESPACE, raw.to_lowercase().as_bytes())
        })))
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

const CUSTOMER_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7266_6c6f_7763_7573_746f_6d65);

/// Longest name on an address, in characters as sent.
pub const NAME_MAX: usize = 100;
/// Longest address line.
pub const LINE_MAX: usize = 200;
/// Longest city.
pub const CITY_MAX: usize = 100;
/// Longest postal code.
pub const POSTAL_CODE_MAX: usize = 20;
/// Longest customer name of the development login.
pub const CUSTOMER_NAME_MAX: usize = 100;

/// One line of text as a person typed it: at most `max` characters as sent, no control
/// characters (tab and line breaks included), and something left once white space is trimmed
/// off both ends, which is what is kept.
pub fn line_of_text(raw: &str, max: usize) -> Result<&str, String> {
    if raw.chars().count() > max || raw.chars().any(char::is_control) {
        return Err(format!(
            "must be at most {max} printable characters on one line"
        ));
    }
    match raw.trim() {
        "" => Err("is required".into()),
        text => Ok(text),
    }
}

/// Where an order goes. Every text field is trimmed and length-checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippingAddress {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

impl ShippingAddress {
    /// Validates every field; `prefix` names the field in errors (`shipping_address`).
    pub fn parse(
        prefix: &str,
        name: Option<&str>,
        line1: Option<&str>,
        line2: Option<&str>,
        city: Option<&str>,
        postal_code: Option<&str>,
        country: Option<&str>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut text = |field: &str, value: Option<&str>, max: usize| -> String {
            match line_of_text(value.unwrap_or(""), max) {
                Ok(v) => v.to_owned(),
                Err(message) => {
                    errors.push(FieldError::new(format!("{prefix}.{field}"), message));
                    String::new()
                }
            }
        };
        let name = text("name", name, NAME_MAX);
        let line1 = text("line1", line1, LINE_MAX);
        // A blank second line is no second line (unless it is too long or hides a control
        // character); anything else follows the same rule as the others.
        let line2 = line2
            .filter(|raw| {
                !raw.trim().is_empty()
                    || raw.chars().count() > LINE_MAX
                    || raw.chars().any(char::is_control)
            })
            .map(|raw| text("line2", Some(raw), LINE_MAX));
        let city = text("city", city, CITY_MAX);
        let postal_code = text("postal_code", postal_code, POSTAL_CODE_MAX);
        // The code exactly as ISO assigns it: the API's schema lists them.
        let country = match country {
            None | Some("") => {
                errors.push(FieldError::new(format!("{prefix}.country"), "is required"));
                String::new()
            }
            Some(code) if is_country(code) => code.to_owned(),
            Some(_) => {
                errors.push(FieldError::new(
                    format!("{prefix}.country"),
                    "must be an assigned ISO 3166-1 alpha-2 code in capitals, such as DE",
                ));
                String::new()
            }
        };
        if errors.is_empty() {
            Ok(Self {
                name,
                line1,
                line2,
                city,
                postal_code,
                country,
            })
        } else {
            Err(errors)
        }
    }
}

/// The officially assigned ISO 3166-1 alpha-2 codes.
pub const COUNTRY_CODES: &str = concat!(
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ ",
    "BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM ",
    "DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS ",
    "GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN ",
    "KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ ",
    "MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM ",
    "PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV ",
    "SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI ",
    "VN VU WF WS YE YT ZA ZM ZW ",
);

/// Whether `code` (uppercase) is an assigned ISO 3166-1 alpha-2 country code.
pub fn is_country(code: &str) -> bool {
    code.len() == 2 && COUNTRY_CODES.split_ascii_whitespace().any(|c| c == code)
}

/// Why the order processor turned an order down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionReason {
    OutOfStock,
    PaymentDeclined,
}

impl RejectionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfStock => "out_of_stock",
            Self::PaymentDeclined => "payment_declined",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_accepts_catalog_codes_and_refuses_the_rest() {
        assert!(Sku::parse("TEA-001").is_ok());
        for bad in ["", "t", "tea-001", "1TEA", "TEA 001", &"A".repeat(33)] {
            assert!(Sku::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn quantity_is_between_1_and_1000() {
        assert!(Quantity::parse(1).is_ok());
        assert!(Quantity::parse(1000).is_ok());
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(1001).is_err());
        assert!(Quantity::parse(-1).is_err());
    }

    #[test]
    fn a_customer_name_maps_to_the_same_id_every_time() {
        let a = CustomerId::parse("Alice").unwrap();
        assert_eq!(a, CustomerId::parse("alice").unwrap());
        assert_ne!(a, CustomerId::parse("bob").unwrap());
        let id = Uuid::new_v4();
        assert_eq!(CustomerId::parse(&id.to_string()).unwrap().0, id);
        assert!(CustomerId::parse("  ").is_err());
    }

    #[test]
    fn countries_are_the_249_assigned_codes() {
        assert_eq!(COUNTRY_CODES.split_ascii_whitespace().count(), 249);
        assert!(is_country("DE") && is_country("GB") && is_country("ZW"));
        assert!(!is_country("ZZ") && !is_country("UK") && !is_country("D"));
    }

    #[test]
    fn a_line_of_text_is_trimmed_and_measured_as_sent() {
        assert_eq!(line_of_text("  Ada Lovelace ", 100), Ok("Ada Lovelace"));
        assert_eq!(
            line_of_text(&"x".repeat(100), 100),
            Ok("x".repeat(100).as_str())
        );
        // Measured before trimming: what the document's maxLength counts.
        assert!(line_of_text(&format!("{} ", "x".repeat(100)), 100).is_err());
        assert_eq!(
            line_of_text(" \u{3000}\t", 100),
            Err("must be at most 100 printable characters on one line".into())
        );
        assert_eq!(line_of_text(" \u{3000}", 100), Err("is required".into()));
        for hidden in ["a\nb", "a\rb", "a\u{0}b", "a\u{85}b"] {
            assert!(line_of_text(hidden, 100).is_err(), "{hidden:?}");
        }
    }

    #[test]
    fn a_country_is_an_assigned_code_exactly_as_written() {
        let parse = |country| {
            ShippingAddress::parse(
                "a",
                Some("Ada"),
                Some("1 Main St"),
                None,
                Some("Berlin"),
                Some("10115"),
                Some(country),
            )
        };
        assert_eq!(parse("DE").unwrap().country, "DE");
        for refused in ["de", " DE", "ZZ", "DEU", ""] {
            assert!(parse(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn an_address_reports_every_bad_field() {
        let errors = ShippingAddress::parse(
            "shipping_address",
            Some("Ada"),
            None,
            None,
            Some(""),
            Some("10115"),
            Some("Germany"),
        )
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "shipping_address.line1",
                "shipping_address.city",
                "shipping_address.country"
            ]
        );
    }
}
