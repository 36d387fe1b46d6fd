//! Whether a local image can run on the runner's architecture: a pure check of what the engine
//! says of the image (`Os`, `Architecture`), made before any runner of it starts and when it is
//! pre-pulled. Pulls already ask the registry for the runner's platform (`linux/<arch>`), so a
//! manifest list without that variant is refused by the registry; this catches the rest: a
//! digest pinned to a single-architecture manifest of another platform, or an image built or
//! loaded locally for another one.

use shared::arch::Arch;

/// The platform string pulls ask for, e.g. `linux/amd64`.
pub fn platform(arch: Arch) -> String {
    format!("linux/{arch}")
}

/// `Ok` when an image of `os`/`architecture` (as the engine reports them; empty: not recorded,
/// which old images may be) runs on `wanted`; else the reason, naming both.
pub fn check(image: &str, os: &str, architecture: &str, wanted: Arch) -> Result<(), String> {
    let os_fits = os.is_empty() || os.eq_ignore_ascii_case("linux");
    let arch_fits = architecture.is_empty() || architecture.parse::<Arch>() == Ok(wanted);
    if os_fits && arch_fits {
        return Ok(());
    }
    let found = match (os, architecture) {
        ("", a) => format!("?/{a}"),
        (o, "") => format!("{o}/?"),
        (o, a) => format!("{o}/{a}"),
    };
    Err(format!(
        "image {image} is built for {found}, but this runner needs {}: use a tag or digest of \
         an image (or manifest list) that has a {} variant",
        platform(wanted),
        platform(wanted)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_images_of_the_runners_platform_pass() {
        for (os, arch, wanted, fits) in [
            ("linux", "amd64", Arch::Amd64, true),
            ("linux", "arm64", Arch::Arm64, true),
            ("linux", "aarch64", Arch::Arm64, true),
            ("", "", Arch::Amd64, true),
            ("linux", "arm64", Arch::Amd64, false),
            ("linux", "amd64", Arch::Arm64, false),
            ("linux", "s390x", Arch::Amd64, false),
            ("windows", "amd64", Arch::Amd64, false),
        ] {
            let result = check("runner:1", os, arch, wanted);
            assert_eq!(result.is_ok(), fits, "{os}/{arch} for {wanted}: {result:?}");
        }
        let reason = check("runner:1", "linux", "arm64", Arch::Amd64).unwrap_err();
        assert!(
            reason.contains("runner:1 is built for linux/arm64")
                && reason.contains("needs linux/amd64"),
            "{reason}"
        );
    }
}
