//! Parsing ε lists: `start:stop:step` (inclusive) or `a,b,c`.

/// The authors' black-box benchmark sweep: 0, 0.03, …, 0.57.
pub const DEFAULT_EPS: &str = "0:0.57:0.03";

/// Parses an ε specification; every ε must lie in `[0, 1]`.
pub fn parse_eps(spec: &str) -> Result<Vec<f32>, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("empty ε list".into());
    }
    let number = |s: &str| -> Result<f64, String> {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number"))?;
        if !v.is_finite() {
            return Err(format!("ε {s} is not finite"));
        }
        Ok(v)
    };
    let values: Vec<f64> = if spec.contains(':') {
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
        (0..=n)
            .map(|i| ((a + s * i as f64) * 1e6).round() / 1e6)
            .collect()
    } else {
        spec.split(',').map(number).collect::<Result<_, _>>()?
    };
    if values.is_empty() {
        return Err("empty ε list".into());
    }
    if let Some(bad) = values.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        return Err(format!("ε {bad} is outside [0, 1] (pixels are in [0, 1])"));
    }
    Ok(values.into_iter().map(|v| v as f32).collect())
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
