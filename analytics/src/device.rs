//! The viewer's device type, read from the `User-Agent`. Coarse on purpose: operators ask
//! "how many watch on TVs", not which model.

use serde::{Deserialize, Serialize};

/// A kind of device.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    /// A desktop or laptop browser.
    Desktop,
    /// A phone.
    Mobile,
    /// A tablet.
    Tablet,
    /// A smart TV, set-top box or streaming stick.
    Tv,
    /// A crawler, a monitoring probe or a command-line client.
    Bot,
    /// Nothing recognisable.
    #[default]
    Other,
}

impl Device {
    /// The device behind a user agent.
    pub fn from_user_agent(ua: &str) -> Self {
        let has = |needle: &str| ua.contains(needle);
        if ua.is_empty() {
            return Self::Other;
        }
        if [
            "SmartTV", "SMART-TV", "Tizen", "Web0S", "WebOS", "AppleTV", "CrKey", "BRAVIA", "Roku",
            "AFT", "HbbTV",
        ]
        .iter()
        .any(|n| has(n))
        {
            return Self::Tv;
        }
        if [
            "bot",
            "Bot",
            "crawler",
            "Spider",
            "curl/",
            "Wget/",
            "python-",
            "Go-http-client",
            "cascade-bench",
        ]
        .iter()
        .any(|n| has(n))
        {
            return Self::Bot;
        }
        if has("iPad") || has("Tablet") || (has("Android") && !has("Mobile")) {
            return Self::Tablet;
        }
        if has("Mobi") || has("iPhone") || has("Android") {
            return Self::Mobile;
        }
        if ["Windows", "Macintosh", "X11", "Linux", "CrOS"]
            .iter()
            .any(|n| has(n))
        {
            return Self::Desktop;
        }
        Self::Other
    }

    /// The name used in APIs and records.
    pub fn label(self) -> &'static str {
        match self {
            Self::Desktop => "desktop",
            Self::Mobile => "mobile",
            Self::Tablet => "tablet",
            Self::Tv => "tv",
            Self::Bot => "bot",
            Self::Other => "other",
        }
    }

    /// Reads a label (the beacon's `device_type`); unknown text is [`Device::Other`].
    pub fn from_label(label: &str) -> Self {
        match label.to_ascii_lowercase().as_str() {
            "desktop" | "web" | "pc" => Self::Desktop,
            "mobile" | "phone" => Self::Mobile,
            "tablet" => Self::Tablet,
            "tv" | "smart_tv" | "smarttv" | "stb" => Self::Tv,
            "bot" => Self::Bot,
            _ => Self::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_user_agents() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
                Device::Desktop,
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120 Safari/537.36",
                Device::Desktop,
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
                Device::Mobile,
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120 Mobile Safari/537.36",
                Device::Mobile,
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 Chrome/120 Safari/537.36",
                Device::Tablet,
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15",
                Device::Tablet,
            ),
            (
                "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36",
                Device::Tv,
            ),
            (
                "Mozilla/5.0 (Linux; Android 9; AFTMM) AppleWebKit/537.36",
                Device::Tv,
            ),
            ("curl/8.5.0", Device::Bot),
            (
                "Googlebot/2.1 (+http://www.google.com/bot.html)",
                Device::Bot,
            ),
            ("", Device::Other),
            ("SomePlayer/1.0", Device::Other),
        ];
        for (ua, device) in cases {
            assert_eq!(Device::from_user_agent(ua), device, "{ua}");
        }
    }

    #[test]
    fn labels_round_trip() {
        for d in [
            Device::Desktop,
            Device::Mobile,
            Device::Tablet,
            Device::Tv,
            Device::Bot,
            Device::Other,
        ] {
            assert_eq!(Device::from_label(d.label()), d);
        }
        assert_eq!(Device::from_label("Smart_TV"), Device::Tv);
        assert_eq!(Device::from_label("toaster"), Device::Other);
    }
}
