//! Parley's own group-context extensions (roles, join rules): replacing one in the context a
//! GroupContextExtensions proposal sets, with its type kept in `required_capabilities` so a
//! device that does not understand it cannot be added.

use openmls::prelude::{
    Extension, ExtensionType, Extensions, GroupContext, RequiredCapabilitiesExtension,
    UnknownExtension,
};

use crate::error::{MlsError, Result};

/// The body of the private extension `extension_type` in `extensions`, if present.
pub(crate) fn extension_body(
    extensions: &Extensions<GroupContext>,
    extension_type: u16,
) -> Option<&[u8]> {
    extensions.unknown(extension_type).map(|e| e.0.as_slice())
}

/// The group-context extensions of `current` with extension `extension_type` set to `body`
/// (removed when `None`); the type is added to `required_capabilities` (openmls requires every
/// non-default extension of the context to be listed there) and stays listed once added.
pub(crate) fn with_extension(
    current: &Extensions<GroupContext>,
    extension_type: u16,
    body: Option<Vec<u8>>,
) -> Result<Extensions<GroupContext>> {
    let ty = ExtensionType::Unknown(extension_type);
    let mut list: Vec<Extension> = current
        .iter()
        .filter(|e| {
            !matches!(e.extension_type(), ExtensionType::RequiredCapabilities)
                && e.extension_type() != ty
        })
        .cloned()
        .collect();
    let mut required = current
        .required_capabilities()
        .map(|r| {
            (
                r.extension_types().to_vec(),
                r.proposal_types().to_vec(),
                r.credential_types().to_vec(),
            )
        })
        .unwrap_or_default();
    if body.is_some() && !required.0.contains(&ty) {
        required.0.push(ty);
    }
    list.push(Extension::RequiredCapabilities(
        RequiredCapabilitiesExtension::new(&required.0, &required.1, &required.2),
    ));
    if let Some(body) = body {
        list.push(Extension::Unknown(extension_type, UnknownExtension(body)));
    }
    Extensions::from_vec(list).map_err(|e| MlsError::Mls(format!("{e:?}")))
}
