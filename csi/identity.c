/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CSI Identity service: the driver's name and version, its
 * capabilities, and Probe, which says ready while etcd answers (without
 * etcd no volume can be created, attached or found). Probe's answer is
 * kept for CSI_PROBE_CACHE_NS: kubelet's liveness probe and the sidecars
 * probe often, and concurrent probes share one read of etcd.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"
#include "replicator/meta/meta.h"

#define CSI_PROBE_CACHE_NS 1000000000ull

static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;
static struct qbd_meta *probe_meta;      /* under probe_lock */
static uint64_t probe_at_ns;             /* when probe_ready was found; 0: never */
static bool probe_ready;

int csi_identity_init(const struct csi_opts *o)
{
	return qbd_meta_open(o->etcd, &probe_meta);
}

void csi_identity_fini(void)
{
	qbd_meta_close(probe_meta);
	probe_meta = NULL;
}

static grpc_status_code get_plugin_info(struct csi_call *c, const ProtobufCMessage *req)
{
	Csi__V1__GetPluginInfoResponse r = CSI__V1__GET_PLUGIN_INFO_RESPONSE__INIT;

	(void)req;
	r.name = (char *)CSI_DRIVER_NAME;
	r.vendor_version = (char *)QBD_VERSION;
	return csi_reply(c, &r.base);
}

/* The same in every mode: they describe the driver, whichever of its
 * services this instance serves. */
static grpc_status_code get_plugin_capabilities(struct csi_call *c, const ProtobufCMessage *req)
{
	Csi__V1__GetPluginCapabilitiesResponse r = CSI__V1__GET_PLUGIN_CAPABILITIES_RESPONSE__INIT;
	Csi__V1__PluginCapability__Service svc[2] = {
		CSI__V1__PLUGIN_CAPABILITY__SERVICE__INIT, CSI__V1__PLUGIN_CAPABILITY__SERVICE__INIT,
	};
	Csi__V1__PluginCapability__VolumeExpansion exp =
		CSI__V1__PLUGIN_CAPABILITY__VOLUME_EXPANSION__INIT;
	Csi__V1__PluginCapability cap[3] = {
		CSI__V1__PLUGIN_CAPABILITY__INIT, CSI__V1__PLUGIN_CAPABILITY__INIT,
		CSI__V1__PLUGIN_CAPABILITY__INIT,
	};
	Csi__V1__PluginCapability *caps[3] = { &cap[0], &cap[1], &cap[2] };

	(void)req;
	svc[0].type = CSI__V1__PLUGIN_CAPABILITY__SERVICE__TYPE__CONTROLLER_SERVICE;
	svc[1].type = CSI__V1__PLUGIN_CAPABILITY__SERVICE__TYPE__VOLUME_ACCESSIBILITY_CONSTRAINTS;
	exp.type = CSI__V1__PLUGIN_CAPABILITY__VOLUME_EXPANSION__TYPE__ONLINE;
	for (int i = 0; i < 2; i++) {
		cap[i].type_case = CSI__V1__PLUGIN_CAPABILITY__TYPE_SERVICE;
		cap[i].service = &svc[i];
	}
	cap[2].type_case = CSI__V1__PLUGIN_CAPABILITY__TYPE_VOLUME_EXPANSION;
	cap[2].volume_expansion = &exp;
	r.n_capabilities = 3;
	r.capabilities = caps;
	return csi_reply(c, &r.base);
}

/* Does etcd answer? A cluster id read; "no cluster id yet" is an answer. */
static bool etcd_answers(void)
{
	uint64_t id;
	int err = qbd_meta_cluster_id(probe_meta, false, &id);

	if (err && err != -ENOENT) {
		if (probe_ready || !probe_at_ns)
			qbd_warn(CSI_COMP, "not ready: etcd does not answer: %s", strerror(-err));
		return false;
	}
	if (!probe_ready && probe_at_ns)
		qbd_info(CSI_COMP, "ready: etcd answers again");
	return true;
}

static grpc_status_code probe(struct csi_call *c, const ProtobufCMessage *req)
{
	Csi__V1__ProbeResponse r = CSI__V1__PROBE_RESPONSE__INIT;
	Csi__V1__BoolValue ready = CSI__V1__BOOL_VALUE__INIT;
	uint64_t now;

	(void)req;
	pthread_mutex_lock(&probe_lock);
	now = qbd_now_ns();
	if (!probe_at_ns || now - probe_at_ns >= CSI_PROBE_CACHE_NS) {
		probe_ready = etcd_answers();
		probe_at_ns = qbd_now_ns();
	}
	ready.value = probe_ready;
	pthread_mutex_unlock(&probe_lock);
	r.ready = &ready;
	return csi_reply(c, &r.base);
}

const struct csi_method csi_identity_methods[] = {
	{ "/csi.v1.Identity/GetPluginInfo", &csi__v1__get_plugin_info_request__descriptor,
	  &csi__v1__get_plugin_info_response__descriptor, get_plugin_info },
	{ "/csi.v1.Identity/GetPluginCapabilities",
	  &csi__v1__get_plugin_capabilities_request__descriptor,
	  &csi__v1__get_plugin_capabilities_response__descriptor, get_plugin_capabilities },
	{ "/csi.v1.Identity/Probe", &csi__v1__probe_request__descriptor,
	  &csi__v1__probe_response__descriptor, probe },
	{ NULL, NULL, NULL, NULL },
};
