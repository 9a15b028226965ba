//! Deleting host veths: one by index on a thread and socket of its own (the kernel runs the
//! deletion, RCU wait included, inside the sender's `sendmsg()`), or the detached ones of a
//! burst all at once through their link group ([`DETACHED_GROUP`]).

use super::*;

/// What the node's links say about [`DETACHED_GROUP`].
struct DetachedGroup {
    /// Every link now: interface index to name.
    present: std::collections::HashMap<u32, String>,
    /// The links in the group that are detached wasmcni veths (a veth carrying
    /// [`VETH_ALIAS`], down).
    members: std::collections::HashSet<u32>,
    /// The links in the group that are anything else, by name: a group deletion would take
    /// them too, so there is none.
    foreign: Vec<String>,
}

/// Says once per daemon that the group holds links wasmcni did not put there (then at debug
/// level): it stays true until an operator acts, and every batch would say it again.
fn warn_foreign_once(foreign: &[String]) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::debug!(
            group = DETACHED_GROUP,
            ?foreign,
            "link group holds links wasmcni did not detach; detached veths are deleted one by one"
        );
    } else {
        tracing::warn!(group = DETACHED_GROUP, ?foreign, "link group {DETACHED_GROUP:#x} holds links wasmcni did not detach; detached veths are deleted one by one while it does (said once)");
    }
}

/// The `RTM_SETLINK` of a detach: the veth down, and into [`DETACHED_GROUP`].
pub(super) fn detach_message(index: u32) -> LinkMessage {
    let mut message = LinkUnspec::new_with_index(index).down().build();
    message
        .attributes
        .push(LinkAttribute::Group(DETACHED_GROUP));
    message
}

/// The `RTM_DELLINK` that deletes every link of [`DETACHED_GROUP`] (no index, no name).
fn group_deletion_message() -> LinkMessage {
    let mut message = LinkMessage::default();
    message
        .attributes
        .push(LinkAttribute::Group(DETACHED_GROUP));
    message
}

impl NetlinkDatapath {
    /// [`Datapath::remove_links`]: a batch goes in one group deletion when every link in
    /// [`DETACHED_GROUP`] is a detached wasmcni veth; the batch's links no longer there (or
    /// whose index now names another link) are gone already; the rest go one by one.
    pub(super) async fn remove_detached(
        &self,
        links: &[(u32, String)],
    ) -> Vec<Result<(), DatapathError>> {
        // Gone already, or deleted with the group: nothing more to do for these.
        let mut done = std::collections::HashSet::new();
        match self.detached_group().await {
            Ok(group) => {
                done.extend(
                    links
                        .iter()
                        .filter(|(index, name)| group.present.get(index) != Some(name))
                        .map(|(index, _)| *index),
                );
                let in_group: Vec<u32> = links
                    .iter()
                    .filter(|(index, _)| group.members.contains(index))
                    .map(|(index, _)| *index)
                    .collect();
                // A lone veth goes by its index; a batch with the group.
                if links.len() > 1 && !in_group.is_empty() {
                    if !group.foreign.is_empty() {
                        warn_foreign_once(&group.foreign);
                    } else {
                        match self.remove_detached_group().await {
                            Ok(()) => done.extend(in_group),
                            Err(e) => {
                                tracing::warn!(error = %e, "deleting the detached veths as one group failed; deleting them one by one")
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the links to delete the detached veths; deleting them one by one by index")
            }
        }
        futures_util::future::join_all(links.iter().map(|(index, name)| {
            let done = done.contains(index);
            async move {
                if done {
                    Ok(())
                } else {
                    self.remove_link(*index, name).await
                }
            }
        }))
        .await
    }

    /// The node's links, sorted as [`DetachedGroup`] says.
    async fn detached_group(&self) -> Result<DetachedGroup, DatapathError> {
        let links = all_links(&self.host).await?;
        let mut group = DetachedGroup {
            present: Default::default(),
            members: Default::default(),
            foreign: Vec::new(),
        };
        for link in &links {
            let name = link_name(link).unwrap_or_default();
            let grouped = link
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Group(g) if *g == DETACHED_GROUP));
            if grouped {
                let detached = is_veth(link)
                    && link_alias(link) == Some(VETH_ALIAS)
                    && !link.header.flags.contains(LinkFlags::Up);
                if detached {
                    group.members.insert(link.header.index);
                } else {
                    group.foreign.push(name.clone());
                }
            }
            group.present.insert(link.header.index, name);
        }
        Ok(group)
    }

    /// Deletes every link in [`DETACHED_GROUP`] at once, on a thread and socket of its own (as
    /// [`Datapath::remove_link`] does one); an empty group is not an error.
    async fn remove_detached_group(&self) -> Result<(), DatapathError> {
        tokio::task::spawn_blocking(|| {
            delete_link_blocking(group_deletion_message(), "the detached veths' group")
        })
        .await
        .map_err(|source| DatapathError::Task {
            what: "delete the detached veths",
            source,
        })?
    }
}

/// Deletes the link `message` names (by name or index; `name` for messages) on a socket and
/// thread of its own; a link already gone is not an error.
pub(super) fn delete_link_blocking(message: LinkMessage, name: &str) -> Result<(), DatapathError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| io_failure(format!("delete host veth {name}"), e))?;
    runtime.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|e| io_failure(format!("open a route socket to delete {name}"), e))?;
        tokio::spawn(connection);
        match handle.link().del_with_message(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(Errno::ENODEV | Errno::ENOENT)) => Ok(()),
            Err(e) => Err(nl(format!("delete host veth {name}"))(e)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_namespaces::{in_private_node, pod_attachment, PrivateNamespace};
    use super::*;

    #[test]
    fn detached_veths_go_in_one_group_deletion_and_nothing_else_goes_with_them() {
        let pods: Vec<PrivateNamespace> = (0..4).map(|_| PrivateNamespace::new()).collect();
        let paths: Vec<String> = pods.iter().map(|p| p.path.clone()).collect();
        in_private_node(move || async move {
            let datapath = NetlinkDatapath::connect().unwrap();
            let attachment = |i: usize, name: &str| {
                pod_attachment(name, &format!("10.255.254.{}", i + 1), &paths[i])
            };
            let live = attachment(3, "wcgrplive");
            datapath.setup_pod(&live).await.unwrap();
            let detach_all = |names: Vec<(usize, &'static str)>| {
                let datapath = datapath.clone();
                let attachments: Vec<_> = names.iter().map(|(i, n)| attachment(*i, n)).collect();
                async move {
                    let mut batch = Vec::new();
                    for a in &attachments {
                        datapath.setup_pod(a).await.unwrap();
                    }
                    for a in &attachments {
                        let index = datapath.detach_pod(&a.host).await.unwrap().unwrap();
                        batch.push((index, a.host.host_veth.clone()));
                    }
                    batch
                }
            };

            // Three DELeted pods: detached, they are the group's, and go at once.
            let batch = detach_all(vec![(0, "wcgrp0"), (1, "wcgrp1"), (2, "wcgrp2")]).await;
            let group = datapath.detached_group().await.unwrap();
            let mut members: Vec<u32> = group.members.iter().copied().collect();
            members.sort();
            assert_eq!(members, batch.iter().map(|(i, _)| *i).collect::<Vec<_>>());
            assert!(group.foreign.is_empty(), "{:?}", group.foreign);
            let results = datapath.remove_links(&batch).await;
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            for (_, name) in &batch {
                assert_eq!(
                    link_index(&datapath.host, name).await.unwrap(),
                    None,
                    "{name}"
                );
            }
            // The live pod is untouched; the same batch again finds nothing to do.
            datapath.check_pod(&live).await.unwrap();
            let again = datapath.remove_links(&batch).await;
            assert!(again.iter().all(Result::is_ok), "{again:?}");

            // Something that is not a detached wasmcni veth in the group (another's veth, no
            // wasmcni alias): no group deletion (it would go too); the batch goes one by one
            // and it stays.
            datapath
                .host
                .link()
                .add(LinkVeth::new("wcforeign", "wcforeignpeer").build())
                .execute()
                .await
                .unwrap();
            let foreign = link_index(&datapath.host, "wcforeign")
                .await
                .unwrap()
                .unwrap();
            datapath
                .host
                .link()
                .set(detach_message(foreign))
                .execute()
                .await
                .unwrap();
            let batch = detach_all(vec![(0, "wcgrp4"), (1, "wcgrp5")]).await;
            let group = datapath.detached_group().await.unwrap();
            assert_eq!(group.foreign, vec!["wcforeign".to_owned()]);
            let results = datapath.remove_links(&batch).await;
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            for (_, name) in &batch {
                assert_eq!(
                    link_index(&datapath.host, name).await.unwrap(),
                    None,
                    "{name}"
                );
            }
            assert_eq!(
                link_index(&datapath.host, "wcforeign").await.unwrap(),
                Some(foreign)
            );

            // An index that now names another link (the veth went, the index was reused) is
            // gone already: that link is not deleted.
            let live_index = link_index(&datapath.host, "wcgrplive")
                .await
                .unwrap()
                .unwrap();
            let stale = vec![
                (live_index, "wcgrpold".to_owned()),
                (u32::MAX - 1, "wcgrpnone".to_owned()),
            ];
            let results = datapath.remove_links(&stale).await;
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            datapath.check_pod(&live).await.unwrap();
        });
    }
}
