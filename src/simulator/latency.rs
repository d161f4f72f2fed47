//! How long a simulated thermostat takes to reply: none, a fixed delay, or the
//! long-tailed delays of real units, drawn from a seeded random generator.

use std::time::Duration;

use super::profile::ModelProfile;

/// Reply delay model for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Latency {
    /// No delay, for load tests.
    #[default]
    Fast,
    /// Delays like real units: about 2.5 s for `/tstat` with a long tail, fast
    /// identity endpoints, 4 to 5 s for program reads.
    Realistic,
    /// The same delay for every request.
    Fixed(Duration),
}

/// Upper bound of any realistic delay.
const MAX_REALISTIC: Duration = Duration::from_secs(60);

/// Endpoint class of a request, for realistic delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// `GET` or `POST /tstat`.
    Tstat,
    /// `/tstat/program/*`.
    Program,
    /// Everything else: identity, names, small sub-resources.
    Other,
}

impl EndpointKind {
    pub fn of_path(path: &str) -> Self {
        if path == "/tstat" {
            Self::Tstat
        } else if path.starts_with("/tstat/program") {
            Self::Program
        } else {
            Self::Other
        }
    }
}

impl Latency {
    /// Draws the delay for one request to `endpoint` on a `profile` unit.
    pub fn draw(
        self,
        endpoint: EndpointKind,
        profile: &ModelProfile,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        match self {
            Self::Fast => Duration::ZERO,
            Self::Fixed(delay) => delay,
            Self::Realistic => realistic(endpoint, profile, rng),
        }
    }
}

fn realistic(endpoint: EndpointKind, profile: &ModelProfile, rng: &mut fastrand::Rng) -> Duration {
    let seconds = match endpoint {
        EndpointKind::Tstat => match profile.realistic_tstat_latency() {
            Some((low, high)) => uniform(low.as_secs_f64(), high.as_secs_f64(), rng),
            None => tstat_seconds(rng),
        },
        EndpointKind::Program => uniform(4.0, 5.0, rng),
        EndpointKind::Other => 0.15 + 0.05 * lognormal(0.0, 0.5, rng),
    };
    Duration::from_secs_f64(seconds).min(MAX_REALISTIC)
}

/// Draws a `/tstat` delay: 2.2 s plus a lognormal tail with median 0.25 s, so the mean is
/// about 2.56 s and about 1 % of draws exceed 4 s. One draw in 5000 instead takes
/// 10 to 60 s. The shape is an estimate fitted to one published timing of 17,121
/// CT50 requests (min 2.24 s, mean 2.55 s, max 61.6 s, ~1 % above 4 s).
fn tstat_seconds(rng: &mut fastrand::Rng) -> f64 {
    if rng.u32(0..5000) == 0 {
        return uniform(10.0, 60.0, rng);
    }
    2.2 + lognormal(0.25_f64.ln(), 0.85, rng)
}

fn uniform(low: f64, high: f64, rng: &mut fastrand::Rng) -> f64 {
    low + (high - low) * rng.f64()
}

/// Draws a lognormal value from a Box-Muller normal.
fn lognormal(mu: f64, sigma: f64, rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (mu + sigma * normal).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realistic_tstat_distribution() {
        let mut rng = fastrand::Rng::with_seed(42);
        let draws: Vec<f64> = (0..20_000)
            .map(|_| {
                Latency::Realistic
                    .draw(EndpointKind::Tstat, &ModelProfile::Ct50, &mut rng)
                    .as_secs_f64()
            })
            .collect();

        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let above_four = draws.iter().filter(|d| **d > 4.0).count() as f64 / draws.len() as f64;
        let min = draws.iter().copied().fold(f64::MAX, f64::min);
        assert!((2.4..2.8).contains(&mean), "mean {mean}");
        assert!(
            (0.003..0.03).contains(&above_four),
            "share above 4 s {above_four}"
        );
        assert!(min >= 2.2, "min {min}");
    }

    #[test]
    fn slow_ct80_tstat_only() {
        let mut rng = fastrand::Rng::with_seed(1);
        let tstat =
            Latency::Realistic.draw(EndpointKind::Tstat, &ModelProfile::Ct80V234T, &mut rng);
        let model =
            Latency::Realistic.draw(EndpointKind::Other, &ModelProfile::Ct80V234T, &mut rng);
        assert!(tstat >= Duration::from_millis(15_500), "{tstat:?}");
        assert!(model < Duration::from_millis(500), "{model:?}");
    }

    #[test]
    fn fast_and_fixed() {
        let mut rng = fastrand::Rng::with_seed(1);
        let fixed = Latency::Fixed(Duration::from_millis(30));
        assert_eq!(
            fixed.draw(EndpointKind::Other, &ModelProfile::Ct30, &mut rng),
            Duration::from_millis(30)
        );
        assert_eq!(
            Latency::Fast.draw(EndpointKind::Tstat, &ModelProfile::Ct80V234T, &mut rng),
            Duration::ZERO
        );
    }
}
