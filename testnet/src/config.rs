//! Knobs of the target server.
//!
//! A load generator is only as trustworthy as the tests that exercise it
//! against misbehaving servers, so the target can be told to be slow
//! ([`Latency`]), slower still for some clients ([`SourceLatency`]), to
//! freeze for a while ([`StallWindow`]) and to fail a fraction of requests
//! (`error_rate`). The knobs are plain data so that tests
//! can build them with struct literals and `..Default::default()`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use http::StatusCode;
use rand::Rng as _;

use crate::{Cidr, parse_duration};

/// Extra latency added to every counted request before it is answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Latency {
    /// No added latency.
    #[default]
    None,
    /// The same added latency for every request.
    Fixed(Duration),
    /// A latency drawn uniformly from `min..=max` for each request.
    Uniform {
        /// Shortest added latency.
        min: Duration,
        /// Longest added latency; must not be below `min`.
        max: Duration,
    },
}

impl Latency {
    /// Draws the latency to add to one request.
    pub fn sample(&self) -> Duration {
        match *self {
            Latency::None => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } if max <= min => min,
            Latency::Uniform { min, max } => {
                // Nanosecond resolution; u64 nanoseconds cover ~584 years.
                let lo = u64::try_from(min.as_nanos()).unwrap_or(u64::MAX);
                let hi = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rand::rng().random_range(lo..=hi))
            }
        }
    }

    /// Checks that a uniform range is not inverted.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Latency::Uniform { min, max } = self {
            ensure!(
                min <= max,
                "latency range {min:?}..{max:?} is inverted: the minimum must not exceed the maximum"
            );
        }
        Ok(())
    }
}

/// Parses `none`, a single duration (`50ms`) or a range (`20ms..80ms`), as
/// accepted by the `--latency` flag. Durations use [`parse_duration`].
impl FromStr for Latency {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("off") {
            return Ok(Latency::None);
        }
        let latency = match s.split_once("..") {
            Some((min, max)) => {
                let min = min.strip_suffix('=').unwrap_or(min);
                let max = max.strip_prefix('=').unwrap_or(max);
                Latency::Uniform {
                    min: parse_duration(min)
                        .with_context(|| format!("invalid latency range `{s}` (minimum)"))?,
                    max: parse_duration(max)
                        .with_context(|| format!("invalid latency range `{s}` (maximum)"))?,
                }
            }
            None => {
                Latency::Fixed(parse_duration(s).with_context(|| format!("invalid latency `{s}`"))?)
            }
        };
        latency.validate()?;
        Ok(latency)
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Latency::None => f.write_str("none"),
            Latency::Fixed(d) => write!(f, "{d:?}"),
            Latency::Uniform { min, max } => write!(f, "{min:?}..{max:?}"),
        }
    }
}

/// Extra latency for requests from a range of client addresses.
///
/// A local testnet sends each simulated region's load from its own loopback
/// range (`127.0.R.0/24`), so a source latency per range makes the target
/// look near to one region and far from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceLatency {
    /// The client addresses it applies to.
    pub from: Cidr,
    /// The latency added, on top of [`TargetConfig::latency`].
    pub latency: Latency,
}

/// Parses `RANGE=LATENCY`, as accepted by the `--latency-from` flag: an
/// [`Cidr`] and a [`Latency`], e.g. `127.0.2.0/24=60ms` or
/// `127.0.3.0/24=20ms..80ms`.
impl FromStr for SourceLatency {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let s = s.trim();
        let Some((from, latency)) = s.split_once('=') else {
            bail!("`{s}` is not RANGE=LATENCY: write e.g. 127.0.2.0/24=60ms");
        };
        let source = SourceLatency {
            from: from.parse()?,
            latency: latency.parse()?,
        };
        Ok(source)
    }
}

impl fmt::Display for SourceLatency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.from, self.latency)
    }
}

/// A period during which the target answers nothing.
///
/// Requests that arrive during the window, and requests already in flight
/// whose response would be sent during it, are held until the window ends.
/// This imitates a server that freezes (a GC pause, a full disk, a blocked
/// event loop) while keeping its connections open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StallWindow {
    /// When the window opens, measured from the server's first counted
    /// request (so it lands inside a run however long the client takes to start).
    pub after: Duration,
    /// How long the window stays open.
    pub duration: Duration,
}

/// Configuration of a [`Target`](crate::Target).
///
/// Build it with a struct literal and `..Default::default()`; the defaults
/// are a well-behaved server on `127.0.0.1` with an ephemeral port.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetConfig {
    /// Address to listen on, e.g. `127.0.0.1:0` for an ephemeral port.
    pub listen: SocketAddr,
    /// Latency added to every counted request.
    pub latency: Latency,
    /// Latency added, on top of [`latency`](Self::latency), to counted
    /// requests from a range of client addresses. The first entry whose
    /// range holds the client's address applies; clients in no range get
    /// none. Default: empty.
    pub source_latency: Vec<SourceLatency>,
    /// An optional period during which requests are held.
    pub stall: Option<StallWindow>,
    /// Fraction of counted requests, `0.0..=1.0`, answered with
    /// [`error_status`](Self::error_status) instead of their route.
    pub error_rate: f64,
    /// Status of injected errors; must be in `200..=599`. Default 503.
    pub error_status: u16,
    /// Allow listening on an address that is not loopback. The target is a
    /// test server with an unauthenticated, memory-holding API, so by default
    /// it refuses to be reachable from other machines.
    pub allow_non_loopback: bool,
    /// Serve HTTPS instead of plain HTTP: a fresh self-signed certificate
    /// for `localhost` and `127.0.0.1` is made at start, and HTTP/2 or
    /// HTTP/1.1 is chosen by ALPN (`h2`, `http/1.1`). The URL then starts
    /// with `https://`; [`Target::certificate_der`](crate::Target::certificate_der)
    /// gives the certificate for a client to trust. Default `false`.
    pub tls: bool,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            latency: Latency::None,
            source_latency: Vec::new(),
            stall: None,
            error_rate: 0.0,
            error_status: 503,
            allow_non_loopback: false,
            tls: false,
        }
    }
}

impl TargetConfig {
    /// Checks the configuration; [`Target::start`](crate::Target::start)
    /// calls this before binding.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.listen.ip().is_loopback() && !self.allow_non_loopback {
            bail!(
                "refusing to listen on non-loopback address {}: this is a test server; \
                 use a 127.0.0.1 or [::1] address, or allow it explicitly \
                 (--allow-non-loopback, or `allow_non_loopback: true`)",
                self.listen
            );
        }
        self.latency.validate()?;
        for source in &self.source_latency {
            source
                .latency
                .validate()
                .with_context(|| format!("latency for clients in {}", source.from))?;
        }
        ensure!(
            self.error_rate.is_finite() && (0.0..=1.0).contains(&self.error_rate),
            "error rate {} is out of range: expected a fraction in 0.0..=1.0",
            self.error_rate
        );
        ensure!(
            (200..=599).contains(&self.error_status)
                && StatusCode::from_u16(self.error_status).is_ok(),
            "error status {} is out of range: expected 200..=599",
            self.error_status
        );
        Ok(())
    }

    /// The extra latency for a client at `peer`: that of the first
    /// [`source_latency`](Self::source_latency) entry whose range holds it,
    /// else [`Latency::None`].
    pub fn source_latency_for(&self, peer: IpAddr) -> Latency {
        self.source_latency
            .iter()
            .find(|source| source.from.contains(peer))
            .map_or(Latency::None, |source| source.latency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_parses() -> anyhow::Result<()> {
        assert_eq!("none".parse::<Latency>()?, Latency::None);
        assert_eq!(
            "50ms".parse::<Latency>()?,
            Latency::Fixed(Duration::from_millis(50))
        );
        let range = Latency::Uniform {
            min: Duration::from_millis(20),
            max: Duration::from_millis(80),
        };
        assert_eq!("20ms..80ms".parse::<Latency>()?, range);
        assert_eq!("20ms..=80ms".parse::<Latency>()?, range);
        assert_eq!(range.to_string(), "20ms..80ms");
        assert!("80ms..20ms".parse::<Latency>().is_err());
        assert!("50".parse::<Latency>().is_err());
        assert!("20ms..".parse::<Latency>().is_err());
        Ok(())
    }

    #[test]
    fn latency_samples_stay_in_range() {
        let min = Duration::from_millis(20);
        let max = Duration::from_millis(21);
        let latency = Latency::Uniform { min, max };
        for _ in 0..1000 {
            let d = latency.sample();
            assert!(min <= d && d <= max, "{d:?}");
        }
        let inverted = Latency::Uniform { min: max, max: min };
        assert_eq!(inverted.sample(), max);
    }

    #[test]
    fn source_latency_parses() -> anyhow::Result<()> {
        let source: SourceLatency = "127.0.2.0/24=60ms".parse()?;
        assert_eq!(source.from, "127.0.2.0/24".parse()?);
        assert_eq!(source.latency, Latency::Fixed(Duration::from_millis(60)));
        assert_eq!(source.to_string(), "127.0.2.0/24=60ms");
        let range: SourceLatency = " 127.0.3.1=20ms..=80ms ".parse()?;
        assert_eq!(range.to_string(), "127.0.3.1/32=20ms..80ms");

        let err = |s: &str| match s.parse::<SourceLatency>() {
            Ok(source) => panic!("`{s}` should be rejected, got {source}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err("127.0.2.0/24").contains("RANGE=LATENCY"));
        assert!(err("127.0.2.0/33=60ms").contains("not a number from 0 to 32"));
        assert!(err("127.0.2.0/24=60").contains("write 60ms or 60s"));
        assert!(err("fra=60ms").contains("\"fra\" is not an IP address"));
        assert!(err("127.0.2.0/24=80ms..20ms").contains("inverted"));
        Ok(())
    }

    #[test]
    fn the_first_matching_source_range_wins() -> anyhow::Result<()> {
        let cfg = TargetConfig {
            source_latency: vec![
                "127.0.2.1/32=5ms".parse()?,
                "127.0.2.0/24=60ms".parse()?,
                "127.0.0.0/8=1s".parse()?,
            ],
            ..Default::default()
        };
        let at = |ip: &str| ip.parse().map(|ip| cfg.source_latency_for(ip));
        assert_eq!(at("127.0.2.1")?, Latency::Fixed(Duration::from_millis(5)));
        assert_eq!(at("127.0.2.2")?, Latency::Fixed(Duration::from_millis(60)));
        assert_eq!(at("127.0.0.1")?, Latency::Fixed(Duration::from_secs(1)));
        assert_eq!(at("10.0.0.1")?, Latency::None);
        assert_eq!(at("::1")?, Latency::None);
        assert_eq!(
            TargetConfig::default().source_latency_for(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Latency::None
        );
        Ok(())
    }

    #[test]
    fn config_validation() {
        assert!(TargetConfig::default().validate().is_ok());
        let bad = [
            TargetConfig {
                error_rate: 1.5,
                ..Default::default()
            },
            TargetConfig {
                error_rate: f64::NAN,
                ..Default::default()
            },
            TargetConfig {
                error_status: 99,
                ..Default::default()
            },
            TargetConfig {
                error_status: 600,
                ..Default::default()
            },
            TargetConfig {
                listen: "0.0.0.0:0".parse().expect("literal address"),
                ..Default::default()
            },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
        let open = TargetConfig {
            listen: "0.0.0.0:0".parse().expect("literal address"),
            allow_non_loopback: true,
            ..Default::default()
        };
        assert!(open.validate().is_ok());
    }
}
