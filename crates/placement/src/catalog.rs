//! The standard resource classes (os-resource-classes) and traits (os-traits).
//!
//! Standard names are fixed in code, exactly as Placement ships them in its libraries:
//! they exist in every deployment, cannot be created or deleted, and only `CUSTOM_*`
//! names live in the database.

/// Standard resource classes, in os-resource-classes order.
pub const STANDARD_RESOURCE_CLASSES: &[&str] = &[
    "VCPU",
    "MEMORY_MB",
    "DISK_GB",
    "PCI_DEVICE",
    "SRIOV_NET_VF",
    "NUMA_SOCKET",
    "NUMA_CORE",
    "NUMA_THREAD",
    "NUMA_MEMORY_MB",
    "IPV4_ADDRESS",
    "VGPU",
    "VGPU_DISPLAY_HEAD",
    "NET_BW_EGR_KILOBIT_PER_SEC",
    "NET_BW_IGR_KILOBIT_PER_SEC",
    "PCPU",
    "MEM_ENCRYPTION_CONTEXT",
    "FPGA",
    "PGPU",
    "NET_PACKET_RATE_KILOPACKET_PER_SEC",
    "NET_PACKET_RATE_EGR_KILOPACKET_PER_SEC",
    "NET_PACKET_RATE_IGR_KILOPACKET_PER_SEC",
];

/// Standard traits (a large subset of os-traits: the ones schedulers and drivers use).
pub const STANDARD_TRAITS: &[&str] = &[
    "COMPUTE_ACCELERATORS",
    "COMPUTE_ADDRESS_SPACE_EMULATED",
    "COMPUTE_ADDRESS_SPACE_PASSTHROUGH",
    "COMPUTE_ARCH_AARCH64",
    "COMPUTE_ARCH_MIPSEL",
    "COMPUTE_ARCH_PPC64LE",
    "COMPUTE_ARCH_RISCV64",
    "COMPUTE_ARCH_S390X",
    "COMPUTE_ARCH_X86_64",
    "COMPUTE_CONFIG_DRIVE_REGENERATION",
    "COMPUTE_DEVICE_TAGGING",
    "COMPUTE_EPHEMERAL_ENCRYPTION",
    "COMPUTE_EPHEMERAL_ENCRYPTION_LUKS",
    "COMPUTE_EPHEMERAL_ENCRYPTION_PLAIN",
    "COMPUTE_FIRMWARE_BIOS",
    "COMPUTE_FIRMWARE_UEFI",
    "COMPUTE_GRAPHICS_MODEL_BOCHS",
    "COMPUTE_GRAPHICS_MODEL_CIRRUS",
    "COMPUTE_GRAPHICS_MODEL_NONE",
    "COMPUTE_GRAPHICS_MODEL_QXL",
    "COMPUTE_GRAPHICS_MODEL_VGA",
    "COMPUTE_GRAPHICS_MODEL_VIRTIO",
    "COMPUTE_IMAGE_TYPE_AKI",
    "COMPUTE_IMAGE_TYPE_AMI",
    "COMPUTE_IMAGE_TYPE_ARI",
    "COMPUTE_IMAGE_TYPE_ISO",
    "COMPUTE_IMAGE_TYPE_PLOOP",
    "COMPUTE_IMAGE_TYPE_QCOW2",
    "COMPUTE_IMAGE_TYPE_RAW",
    "COMPUTE_IMAGE_TYPE_VDI",
    "COMPUTE_IMAGE_TYPE_VHD",
    "COMPUTE_IMAGE_TYPE_VHDX",
    "COMPUTE_IMAGE_TYPE_VMDK",
    "COMPUTE_MANAGED_PCI_DEVICE",
    "COMPUTE_MEM_BACKING_FILE",
    "COMPUTE_NET_ATTACH_INTERFACE",
    "COMPUTE_NET_ATTACH_INTERFACE_WITH_TAG",
    "COMPUTE_NET_VIF_MODEL_E1000",
    "COMPUTE_NET_VIF_MODEL_E1000E",
    "COMPUTE_NET_VIF_MODEL_IGB",
    "COMPUTE_NET_VIF_MODEL_LAN9118",
    "COMPUTE_NET_VIF_MODEL_NE2K_PCI",
    "COMPUTE_NET_VIF_MODEL_PCNET",
    "COMPUTE_NET_VIF_MODEL_RTL8139",
    "COMPUTE_NET_VIF_MODEL_SPAPR_VLAN",
    "COMPUTE_NET_VIF_MODEL_SRIOV",
    "COMPUTE_NET_VIF_MODEL_VIRTIO",
    "COMPUTE_NET_VIF_MODEL_VMXNET",
    "COMPUTE_NET_VIF_MODEL_VMXNET3",
    "COMPUTE_NET_VIRTIO_PACKED",
    "COMPUTE_NODE",
    "COMPUTE_RESCUE_BFV",
    "COMPUTE_SAME_HOST_COLD_MIGRATE",
    "COMPUTE_SECURITY_TPM_1_2",
    "COMPUTE_SECURITY_TPM_2_0",
    "COMPUTE_SECURITY_UEFI_SECURE_BOOT",
    "COMPUTE_SOCKET_PCI_NUMA_AFFINITY",
    "COMPUTE_SOUND_MODEL_AC97",
    "COMPUTE_SOUND_MODEL_ES1370",
    "COMPUTE_SOUND_MODEL_ICH6",
    "COMPUTE_SOUND_MODEL_ICH9",
    "COMPUTE_SOUND_MODEL_SB16",
    "COMPUTE_SOUND_MODEL_USB",
    "COMPUTE_SOUND_MODEL_VIRTIO",
    "COMPUTE_STATUS_DISABLED",
    "COMPUTE_STORAGE_BUS_FDC",
    "COMPUTE_STORAGE_BUS_IDE",
    "COMPUTE_STORAGE_BUS_LXC",
    "COMPUTE_STORAGE_BUS_SATA",
    "COMPUTE_STORAGE_BUS_SCSI",
    "COMPUTE_STORAGE_BUS_UML",
    "COMPUTE_STORAGE_BUS_USB",
    "COMPUTE_STORAGE_BUS_VIRTIO",
    "COMPUTE_STORAGE_BUS_XEN",
    "COMPUTE_STORAGE_VIRTIO_FS",
    "COMPUTE_TRUSTED_CERTS",
    "COMPUTE_VIOMMU_MODEL_AUTO",
    "COMPUTE_VIOMMU_MODEL_INTEL",
    "COMPUTE_VIOMMU_MODEL_SMMUV3",
    "COMPUTE_VIOMMU_MODEL_VIRTIO",
    "COMPUTE_VOLUME_ATTACH",
    "COMPUTE_VOLUME_ATTACH_WITH_TAG",
    "COMPUTE_VOLUME_EXTEND",
    "COMPUTE_VOLUME_MULTI_ATTACH",
    "HW_ARCH_AARCH64",
    "HW_ARCH_X86_64",
    "HW_CPU_AARCH64_AES",
    "HW_CPU_AARCH64_ASIMD",
    "HW_CPU_AARCH64_SHA1",
    "HW_CPU_AARCH64_SHA2",
    "HW_CPU_AMD_SEV",
    "HW_CPU_AMD_SEV_ES",
    "HW_CPU_AMD_SVM",
    "HW_CPU_HYPERTHREADING",
    "HW_CPU_X86_3DNOW",
    "HW_CPU_X86_ABM",
    "HW_CPU_X86_AESNI",
    "HW_CPU_X86_AMD_SEV",
    "HW_CPU_X86_AMD_SVM",
    "HW_CPU_X86_AVX",
    "HW_CPU_X86_AVX2",
    "HW_CPU_X86_AVX512BW",
    "HW_CPU_X86_AVX512CD",
    "HW_CPU_X86_AVX512DQ",
    "HW_CPU_X86_AVX512ER",
    "HW_CPU_X86_AVX512F",
    "HW_CPU_X86_AVX512PF",
    "HW_CPU_X86_AVX512VL",
    "HW_CPU_X86_AVX512VNNI",
    "HW_CPU_X86_BMI",
    "HW_CPU_X86_BMI2",
    "HW_CPU_X86_CLMUL",
    "HW_CPU_X86_F16C",
    "HW_CPU_X86_FMA3",
    "HW_CPU_X86_FMA4",
    "HW_CPU_X86_INTEL_VMX",
    "HW_CPU_X86_MMX",
    "HW_CPU_X86_MPX",
    "HW_CPU_X86_PDPE1GB",
    "HW_CPU_X86_SGX",
    "HW_CPU_X86_SHA",
    "HW_CPU_X86_SSE",
    "HW_CPU_X86_SSE2",
    "HW_CPU_X86_SSE3",
    "HW_CPU_X86_SSE41",
    "HW_CPU_X86_SSE42",
    "HW_CPU_X86_SSE4A",
    "HW_CPU_X86_SSSE3",
    "HW_CPU_X86_SVM",
    "HW_CPU_X86_TBM",
    "HW_CPU_X86_VMX",
    "HW_CPU_X86_XOP",
    "HW_GPU_API_DIRECT2D",
    "HW_GPU_API_DIRECT3D_V10_0",
    "HW_GPU_API_DIRECT3D_V11_0",
    "HW_GPU_API_DIRECT3D_V12_0",
    "HW_GPU_API_OPENGL_V4_6",
    "HW_GPU_API_VULKAN",
    "HW_GPU_CUDA_COMPUTE_CAPABILITY_V8_0",
    "HW_GPU_MAX_DISPLAY_HEADS_1",
    "HW_GPU_MAX_DISPLAY_HEADS_2",
    "HW_GPU_MAX_DISPLAY_HEADS_4",
    "HW_GPU_RESOLUTION_W1920H1080",
    "HW_GPU_RESOLUTION_W3840H2160",
    "HW_NIC_ACCEL_DEFLATE",
    "HW_NIC_ACCEL_DIFFIEH",
    "HW_NIC_ACCEL_IPSEC",
    "HW_NIC_ACCEL_RSA",
    "HW_NIC_ACCEL_SSL",
    "HW_NIC_ACCEL_TLS",
    "HW_NIC_ACCEL_ZUC",
    "HW_NIC_DCB_ETS",
    "HW_NIC_DCB_PFC",
    "HW_NIC_DCB_QCN",
    "HW_NIC_MULTIQUEUE",
    "HW_NIC_OFFLOAD_FDF",
    "HW_NIC_OFFLOAD_GENEVE",
    "HW_NIC_OFFLOAD_GRO",
    "HW_NIC_OFFLOAD_GSO",
    "HW_NIC_OFFLOAD_L2TP",
    "HW_NIC_OFFLOAD_LRO",
    "HW_NIC_OFFLOAD_QINQ",
    "HW_NIC_OFFLOAD_RDMA",
    "HW_NIC_OFFLOAD_RX",
    "HW_NIC_OFFLOAD_RXHASH",
    "HW_NIC_OFFLOAD_RXVLAN",
    "HW_NIC_OFFLOAD_SG",
    "HW_NIC_OFFLOAD_SWITCHDEV",
    "HW_NIC_OFFLOAD_TCS",
    "HW_NIC_OFFLOAD_TSO",
    "HW_NIC_OFFLOAD_TX",
    "HW_NIC_OFFLOAD_TXUDP",
    "HW_NIC_OFFLOAD_TXVLAN",
    "HW_NIC_OFFLOAD_UCS",
    "HW_NIC_OFFLOAD_UFO",
    "HW_NIC_OFFLOAD_VXLAN",
    "HW_NIC_PROGRAMMABLE_PIPELINE",
    "HW_NIC_SRIOV",
    "HW_NIC_SRIOV_MULTIQUEUE",
    "HW_NIC_SRIOV_QOS_RX",
    "HW_NIC_SRIOV_QOS_TX",
    "HW_NIC_SRIOV_TRUSTED",
    "HW_NIC_VMDQ",
    "HW_NUMA_ROOT",
    "MISC_SHARES_VIA_AGGREGATE",
    "OWNER_CYBORG",
    "OWNER_NOVA",
    "STORAGE_DISK_HDD",
    "STORAGE_DISK_SSD",
];

/// The trait marking a provider whose inventory is shared with the providers in its
/// aggregates (shared storage, an IP pool).
pub const SHARES_VIA_AGGREGATE: &str = "MISC_SHARES_VIA_AGGREGATE";

/// True for a standard resource class.
pub fn is_standard_class(name: &str) -> bool {
    STANDARD_RESOURCE_CLASSES.contains(&name)
}

/// True for a standard trait.
pub fn is_standard_trait(name: &str) -> bool {
    STANDARD_TRAITS.binary_search(&name).is_ok()
}

/// True when `name` is a valid custom name: `CUSTOM_` then upper-case letters, digits
/// and underscores, at most 255 characters in all.
pub fn is_valid_custom(name: &str) -> bool {
    name.len() > 7
        && name.len() <= 255
        && name.starts_with("CUSTOM_")
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traits_sorted_for_binary_search() {
        let mut s = STANDARD_TRAITS.to_vec();
        s.sort_unstable();
        assert_eq!(s, STANDARD_TRAITS);
        assert!(is_standard_trait("HW_CPU_X86_AVX2"));
        assert!(is_standard_trait("STORAGE_DISK_SSD"));
        assert!(!is_standard_trait("CUSTOM_X"));
        assert!(is_valid_custom("CUSTOM_GOLD_1"));
        assert!(!is_valid_custom("CUSTOM_"));
        assert!(!is_valid_custom("CUSTOM_lower"));
        assert!(is_standard_class("PCPU"));
    }
}
