-- The host whose DHCP agent serves each network (Neutron's network-DHCP agent binding).
-- The scheduler writes a row when it first gives a network a DHCP server; an admin moves
-- it with the dhcp_agent_scheduler API. An empty host means an admin took the network off
-- its agent: the scheduler leaves it unserved until one is added again.
CREATE TABLE network_dhcp_hosts (
    network_id TEXT PRIMARY KEY,
    host TEXT NOT NULL
);
