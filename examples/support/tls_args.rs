//! The `--ssl-dist-optfile FILE` option of the examples that start a node (`echo_node`,
//! `rpc_call`).

/// `--ssl-dist-optfile FILE`: TLS distribution configured by the file the Erlang nodes
/// are started with (`erl -proto_dist inet_tls -ssl_dist_optfile FILE`).
#[cfg(feature = "tls")]
pub fn with_tls(
    b: autocluster::node::NodeBuilder,
    optfile: Option<String>,
) -> Result<autocluster::node::NodeBuilder, String> {
    match optfile {
        Some(f) => Ok(b.tls(
            autocluster::tls::TlsConfig::from_ssl_dist_optfile(&f).map_err(|e| e.to_string())?,
        )),
        None => Ok(b),
    }
}

#[cfg(not(feature = "tls"))]
pub fn with_tls(
    b: autocluster::node::NodeBuilder,
    optfile: Option<String>,
) -> Result<autocluster::node::NodeBuilder, String> {
    match optfile {
        Some(_) => {
            Err("--ssl-dist-optfile needs a build with TLS: cargo run --features tls ...".into())
        }
        None => Ok(b),
    }
}
