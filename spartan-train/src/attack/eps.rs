//! Parsing ε lists: comma-separated numbers and `start:stop:step` ranges (inclusive),
//! e.g. `0:0.57:0.03,0.1,0.2`; the result is sorted and free of repeats.

/// The authors' black-box benchmark sweep: 0, 0.03, …, 0.57.
pub const DEFAULT_EPS: &str = "0:0.57:0.03";

/// What `reproduce` sweeps: the authors' grid plus 0.1 and 0.2, the budgets robustness
/// results are usually quoted at (0.3 is on the grid).
pub const REPRODUCE_EPS: &str = "0:0.57:0.03,0.1,0.2";

/// What `reproduce` sweeps with the white-box attacks on the embedded subset (their
/// per-image worst case costs hundreds of gradients per robust image and ε): every
/// tenth, which still holds 0.1, 0.2 and 0.3.
pub const QUICK_WHITE_BOX_EPS: &str = "0:0.5:0.1";

/// Parses an ε specification; every ε must lie in `[0, 1]`.
pub fn parse_eps(spec: &str) -> Result<Vec<f32>, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("empty ε list".into());
    }
    let mut values = Vec::new();
    for item in spec.split(',') {
        if item.contains(':') {
            values.extend(range(item.trim())?);
        } else {
            values.push(number(item)?);
        }
        if values.len() > 10_000 {
            return Err(format!("{spec:?} has more than 10,000 values"));
        }
    }
    if let Some(bad) = values.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        return Err(format!("ε {bad} is outside [0, 1] (pixels are in [0, 1])"));
    }
    values.sort_by(f64::total_cmp);
    values.dedup();
    Ok(values.into_iter().map(|v| v as f32).collect())
}

/// One finite number.
fn number(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{:?} is not a number", s.trim()))?;
    if !v.is_finite() {
        return Err(format!("ε {s} is not finite"));
    }
    Ok(v)
}

/// `start:stop:step`, both ends included.
fn range(spec: &str) -> Result<Vec<f64>, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [a, b, s] = parts.as_slice() else {
        return Err(format!("range {spec:?} must be start:stop:step"));
    };
    let (a, b, s) = (number(a)?, number(b)?, number(s)?);
    if s <= 0.0 {
        return Err(format!("range step {s} must be positive"));
    }
    if b < a {
        return Err(format!("range {spec:?} ends before it starts"));
    }
    let n = ((b - a) / s + 1e-6).floor() as usize;
    if n > 10_000 {
        return Err(format!("range {spec:?} has more than 10,000 values"));
    }
    // Round to the step's precision so 0.03·19 prints as 0.57, not 0.5699999.
    Ok((0..=n)
        .map(|i| ((a + s * i as f64) * 1e6).round() / 1e6)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sweep_has_twenty_values_ending_at_057() {
        let v = parse_eps(DEFAULT_EPS).unwrap();
        assert_eq!(v.len(), 20);
        assert_eq!(v[0], 0.0);
        assert_eq!(v[19], 0.57);
        assert_eq!(parse_eps("0.1, 0.2,0.3").unwrap(), [0.1, 0.2, 0.3]);
    }

    #[test]
    fn ranges_and_numbers_mix_sorted_without_repeats() {
        let v = parse_eps(REPRODUCE_EPS).unwrap();
        assert_eq!(v.len(), 22);
        assert_eq!(&v[3..6], &[0.09, 0.1, 0.12]);
        assert_eq!(&v[7..10], &[0.18, 0.2, 0.21]);
        assert!(v.contains(&0.3));
        let quick = parse_eps(QUICK_WHITE_BOX_EPS).unwrap();
        assert_eq!(quick, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]);
        assert_eq!(
            parse_eps("0.3,0:0.2:0.1,0.1").unwrap(),
            [0.0, 0.1, 0.2, 0.3]
        );
    }

    #[test]
    fn bad_lists_are_explained() {
        assert!(parse_eps("").unwrap_err().contains("empty"));
        assert!(parse_eps("0.1,1.5").unwrap_err().contains("outside [0, 1]"));
        assert!(parse_eps("-0.1").unwrap_err().contains("outside"));
        assert!(parse_eps("0:0.5").unwrap_err().contains("start:stop:step"));
        assert!(parse_eps("0:0.5:0").unwrap_err().contains("positive"));
        assert!(parse_eps("a,b").unwrap_err().contains("not a number"));
        assert!(parse_eps("nan").unwrap_err().contains("not finite"));
    }
}
